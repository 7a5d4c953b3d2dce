"""Check, in one command, that droidspeak can drive a model: the probe every pair runs before it computes anything
(droidspeak.engine.verify), printed plan by plan, optionally at a long context too. Exit status 1 when refused.

    python experiments/verify_model.py model=.cache/droidspeak/zoo-smollm2-*/models/base dtype=bfloat16
    python experiments/verify_model.py +gguf=gemma3_270m long_context=700 out=reports/verify/gemma3-270m.md
    python experiments/verify_model.py model=/models/Mistral-7B-v0.1 dtype=bfloat16 device=cuda long_context=6000
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

import droidspeak.sweep.config  # noqa: F401  (registers every config schema)
from droidspeak.engine.loading import load_model
from droidspeak.engine.verify import PROBE_CONTEXTS, probe
from droidspeak.errors import DroidSpeakError
from droidspeak.markdown import table
from droidspeak.sweep.console import entry_point
from droidspeak.zoo.family import cache_root
from droidspeak.zoo.gguf_base import GgufConfig, convert_base


def converted(cfg: GgufConfig) -> Path:
    """The GGUF of ``cfg`` as an HF directory, converted once (the same path as a zoo family's base)."""
    destination = cache_root() / "gguf" / f"{Path(cfg.file).stem}-{cfg.sha256[:12]}" / "model"
    if not (destination / "config.json").is_file():
        source = convert_base(cfg, destination)
        (destination.parent / "SOURCE.json").write_text(json.dumps(source, indent=1) + "\n")  # package, version, sha256
    return destination


@entry_point("verify_model")
def main(cfg: DictConfig) -> None:
    source = cfg.get("gguf")
    try:
        path = str(converted(GgufConfig(**OmegaConf.to_container(source)))) if source else cfg.model
        if not path:
            sys.exit("give model=PATH or +gguf=NAME (conf/gguf/)")
        model = load_model(path, adapter=cfg.adapter, dtype=cfg.dtype, device=cfg.device,
                           trust_remote_code=cfg.trust_remote_code)
    except DroidSpeakError as err:
        sys.exit(f"refused: {err}")
    config = model.config
    lines = [f"{type(model.model).__name__} ({config.model_type}) from `{source.file if source else path}`: "
             f"{model.stack.num_layers} layers, attention {sorted(set(model.stack.layer_types))}, "
             f"sliding window {getattr(config, 'sliding_window', None)}, {cfg.dtype} on {model.device}", ""]
    rows, failed = [], False
    for lengths in [PROBE_CONTEXTS] + ([(cfg.long_context,)] if cfg.long_context else []):
        checked = probe(model, lengths)
        failed |= bool(checked.failed)
        for r in checked.results:
            error = f"raised {r.raised}" if r.error is None else f"{r.error:.1e}"
            rows.append([" + ".join(map(str, checked.lengths)), f"`{r.plan}`", r.what, error, f"{checked.allowed:.0e}",
                         "FAIL" if r in checked.failed else "ok"])
    lines += table(["context tokens", "plan", "exercises", "relative logit error", "allowed", ""], rows)
    lines += ["", "refused: driving its layers does not reproduce its own forward" if failed else "verified"]
    text = "\n".join(lines) + "\n"
    print(text)
    if cfg.out:
        Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.out).write_text(f"# Verifying {Path(path).parent.name if source else path}\n\n"
                                 f"`python experiments/verify_model.py {' '.join(sys.argv[1:])}`\n\n" + text)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
