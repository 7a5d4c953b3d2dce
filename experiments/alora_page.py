"""Write reports/smollm2_alora/ (page, summary.json, figure) from the aLoRA sweep's rows and the two adapters'
training records; see droidspeak.figures.alora_page.

    python experiments/alora_page.py                    # from the files beside the page (regenerates identically)
    python experiments/alora_page.py training=true      # first copy the family's training records
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

import droidspeak.sweep.config  # noqa: F401  (registers every config schema)
from droidspeak.figures.alora_page import write_alora_page
from droidspeak.sweep.console import entry_point
from droidspeak.zoo.family import build_family

log = logging.getLogger("alora_page")


def training_record(report: dict, lora: str, alora: str) -> dict:
    """Both adapters' recipes and logged losses, and the aLoRA's invocation and check against peft (family report)."""
    extension = report["extensions"][alora]
    return {
        "lora": {
            "name": lora,
            "recipe": report["recipe"]["variants"][lora],
            "curve": report["curves"][f"finetune-{lora}"],
        },
        "alora": {
            "name": alora,
            "recipe": extension["recipe"],
            "curve": extension["curve"],
            "invocation_tokens": extension["invocation_tokens"],
            "oracle": extension["oracle"],
        },
    }


@entry_point("alora_page")
def main(cfg: DictConfig) -> None:
    out = Path(hydra.utils.to_absolute_path(cfg.out_dir))
    if cfg.training:
        family = build_family(cfg.zoo, progress=False, log=log.info)
        record = training_record(family.report, cfg.lora, cfg.alora)
        (out / "training.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    page = write_alora_page(out, OmegaConf.to_container(cfg.comparisons), command=cfg.command, tolerance=cfg.tolerance,
                            template=hydra.utils.to_absolute_path(cfg.template))
    log.info("wrote %s", page)


if __name__ == "__main__":
    main()
