"""Check, in one command, that droidspeak can drive a model: the probe every pair runs before it computes anything
(droidspeak.engine.verify), printed plan by plan. Exit status 1 when the model is refused.

    python experiments/verify_model.py model=.cache/droidspeak/zoo-smollm2-*/base
    python experiments/verify_model.py model=/models/Mistral-7B-v0.1 dtype=bfloat16 device=cuda
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from droidspeak.engine.verify import probe
from droidspeak.errors import DroidSpeakError
from droidspeak.loading import load_model


@hydra.main(config_path="../conf", config_name="verify_model", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        model = load_model(cfg.model, adapter=cfg.adapter, dtype=cfg.dtype, device=cfg.device,
                           trust_remote_code=cfg.trust_remote_code)
    except DroidSpeakError as err:
        sys.exit(f"refused: {err}")
    config = model.config
    print(f"{type(model.model).__name__} ({config.model_type}), {model.stack.num_layers} layers, "
          f"layer types {sorted(set(model.stack.layer_types))}, {cfg.dtype} on {model.device}")
    checked = probe(model)
    print(f"  its own rounding noise {checked.noise:.1e}: errors up to {checked.allowed:.1e} of the logits' scale pass")
    for result in checked.results:
        detail = f"raised {result.raised}" if result.error is None else f"relative logit error {result.error:.1e}"
        print(f"  {'FAIL' if result in checked.failed else 'ok  '} {result.plan:<16} {result.what}: {detail}")
    window = getattr(config, "sliding_window", None)
    if window and "sliding_attention" in model.stack.layer_types:
        print(f"  note: sliding-window layers (window {window}): contexts up to {window} tokens")
    sys.exit(1 if checked.failed else 0)


if __name__ == "__main__":
    main()
