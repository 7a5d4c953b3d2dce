"""The fault and bad-input campaign on the toy family; writes reports/robustness.md (see droidspeak.robustness).

    python experiments/robustness.py                      # 20 kills, 4 writers, every bad input (~11 min)
    python experiments/robustness.py zoo=mini kill_trials=5 writers=2 out_dir=/tmp/r   # a quick one
    python experiments/robustness.py render_only=true     # the page again from reports/robustness.json
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from omegaconf import DictConfig

import droidspeak.sweep.config  # noqa: F401  (registers the zoo schema)
from droidspeak.robustness.campaign import run_campaign
from droidspeak.robustness.campaign_page import write_page
from droidspeak.sweep.console import entry_point
from droidspeak.zoo.family import build_family, cache_root

log = logging.getLogger("robustness")


@entry_point("robustness")
def main(cfg: DictConfig) -> None:
    out = Path(cfg.out_dir)
    template = Path(__file__).resolve().parents[1] / cfg.template  # conf/ beside experiments/, from any folder
    if cfg.render_only:
        page = write_page(json.loads((out / "robustness.json").read_text()), out, command=cfg.command,
                          template=template)
        log.info("wrote %s", page)
        return
    family = build_family(cfg.zoo, progress=cfg.progress, log=log.info)
    env = {"DROIDSPEAK_CACHE": str(cache_root()), "HF_HUB_OFFLINE": "1"}  # the sweeps find this family, not train one
    tallies = run_campaign(cfg, family, Path(__file__).with_name("evaluate.py"), env)
    page = write_page(tallies, out, command=cfg.command, template=template)
    log.info("wrote %s", page)
    failed = [o["name"] for o in tallies["bad_inputs"] if not o["ok"]] + [
        f"kill {k['trial']}" for k in tallies["kills"] if k["killed"] and not k["ok"]]
    failed += [] if tallies["writers"]["ok"] else ["writers"]
    failed += [] if tallies["memory"]["ok"] else ["memory bound"]
    if failed:
        raise SystemExit(f"robustness campaign: {len(failed)} failure(s): {', '.join(failed)} (see {page})")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
