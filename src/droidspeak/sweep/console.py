"""What a run prints: its own progress and result, not third-party chatter; a droidspeak error as one line.

Every entry point in ``experiments/`` declares its main with :func:`entry_point` (``@hydra.main`` over :func:`entry`,
its command-line keys checked against its schema before Hydra composes). It turns down what floods a terminal — W&B's
banners and run summaries, lm-eval's per-run INFO lines and its warnings about the model object we hand it on
purpose, transformers' weight-loading progress bars, fontTools' PDF-subsetting INFO and a transformers deprecation
warning raised inside peft (lm-eval's own two progress bars stay: tqdm reads its switches when it is imported) —
and turns a :class:`DroidSpeakError` into one line on stderr and exit status 1. ``DROIDSPEAK_DEBUG=1`` keeps all
of it, tracebacks included. Before the main runs, its config's values are checked (``config.check_values``): a count
of 0, an unknown split or an unwritable folder fails before anything is built or loaded, in every entry point.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import sys
import warnings
from pathlib import Path

import hydra
from omegaconf import DictConfig

from droidspeak.errors import DroidSpeakError
from droidspeak.sweep.config import SCHEMAS, check_values, unknown_key

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


def _refuse(err: DroidSpeakError) -> None:
    if debugging():
        raise err
    print(f"error: {type(err).__name__}: {err}", file=sys.stderr, flush=True)
    raise SystemExit(1) from None


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
            _refuse(err)

    return run


def check_overrides(config_name: str, conf_dir: Path, argv: list[str]) -> None:
    """A command-line override naming no setting (``task.limt=8``) is refused with the valid keys and the closest
    one, before Hydra composes (whose own message names the key but not the choices, and suggests ``+``)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for arg in argv:
        if arg.startswith("-") or "=" not in arg:
            continue  # Hydra's flags (-m, --cfg job ...) are Hydra's
        try:
            (override,) = parser.parse_overrides([arg])
        except Exception:  # noqa: BLE001 - a malformed override is Hydra's to explain
            continue
        key = override.key_or_group
        if override.package is not None or key.startswith("hydra") or "/" in key or override.is_delete():
            continue
        if "." not in key and (conf_dir / key).is_dir():
            continue  # a config group's option (pair=..., +experiment=...): Hydra lists the available ones
        problem = unknown_key(SCHEMAS[config_name], key)
        if problem:
            raise DroidSpeakError(problem)


def entry_point(config_name: str):
    """``@hydra.main`` over :func:`entry` for ``conf/<config_name>.yaml``, its command-line keys checked first."""

    def wrap(main):
        conf_dir = (Path(inspect.getfile(main)).parent / ".." / "conf").resolve()
        hydra_main = hydra.main(config_path=str(conf_dir), config_name=config_name, version_base="1.3")(entry(main))

        @functools.wraps(main)
        def run():
            try:
                check_overrides(config_name, conf_dir, sys.argv[1:])
            except DroidSpeakError as err:
                _refuse(err)
            return hydra_main()

        return run

    return wrap
