"""What a run prints: its own progress and result, not third-party chatter; a droidspeak error as one line.

Every entry point in ``experiments/`` wraps its main with :func:`entry`. It turns down what floods a terminal — W&B's
banners and run summaries, lm-eval's per-run INFO lines and its warnings about the model object we hand it on
purpose, transformers' weight-loading progress bars, fontTools' PDF-subsetting INFO and a transformers deprecation
warning raised inside peft (lm-eval's own two progress bars stay: tqdm reads its switches when it is imported) —
and turns a :class:`DroidSpeakError` into one line on stderr and exit status 1. ``DROIDSPEAK_DEBUG=1`` keeps all
of it, tracebacks included. Before the main runs, its config's values are checked (``config.check_values``): a count
of 0, an unknown split or an unwritable folder fails before anything is built or loaded, in every entry point.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import warnings

from omegaconf import DictConfig

from droidspeak.errors import DroidSpeakError
from droidspeak.sweep.config import check_values

DEBUG = "DROIDSPEAK_DEBUG"
QUIETER = {  # logger -> the lowest level it still shows
    "fontTools": logging.WARNING,
    "matplotlib": logging.WARNING,
    "lm_eval": logging.WARNING,
    "lm-eval": logging.WARNING,
    "wandb": logging.WARNING,
    "httpx": logging.WARNING,
}
EXPECTED = (  # lm-eval's warnings about what the droidspeak backend does on purpose: hand HFLM a built model
    "`pretrained` model kwarg is not of type `str`",
    "Passed an already-initialized model through `pretrained`",
)


def debugging() -> bool:
    return os.environ.get(DEBUG, "") not in ("", "0")


class _Expected(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not any(text in record.getMessage() for text in EXPECTED)


def quiet() -> None:
    """Third-party chatter off (idempotent); nothing changes with DROIDSPEAK_DEBUG=1."""
    if debugging():
        return
    for name, level in QUIETER.items():
        logging.getLogger(name).setLevel(level)
    logging.getLogger("lm_eval.models.huggingface").addFilter(_Expected())
    os.environ.setdefault("WANDB_SILENT", "true")
    warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*", category=FutureWarning)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def entry(main):
    """Wrap an entry point's main (under ``@hydra.main``, which sees through the wrapper): quiet, its config's values
    checked, and a DroidSpeakError as ``error: <Kind>: <message>`` on stderr with exit status 1."""

    @functools.wraps(main)
    def run(*args, **kwargs):
        quiet()
        try:
            if args and isinstance(args[0], DictConfig):
                check_values(args[0])
            return main(*args, **kwargs)
        except DroidSpeakError as err:
            if debugging():
                raise
            print(f"error: {type(err).__name__}: {err}", file=sys.stderr, flush=True)
            raise SystemExit(1) from None

    return run
