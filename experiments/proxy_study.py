"""The output-level proxy, compared like with like and held out (make study NAME=smollm2_proxy):

1. its decision rule is chosen on the toy family's profiles only (profile.proxy.select_rule), and must be the rule
   the real family's profiles ran with;
2. on each real pair, the proxy's plan and the task search's plan (both on the same 8 profile-split questions, their
   costs measured in the profile job) are scored on the test split, beside the receiver's own prefill;
3. reports/smollm2_proxy/ gets the rows (heldout.jsonl, the ResultRow schema), summary.json, the figure and the page.

    python experiments/proxy_study.py  # after profile_pair.py -m experiment=smollm2_proxy_profile and make demo
"""

from __future__ import annotations

import glob
import json
import logging
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

import droidspeak.sweep.config  # noqa: F401  (registers every config schema)
from droidspeak.figures.proxy_page import write_proxy_page
from droidspeak.profile.profile_file import comparisons_path, load_profile
from droidspeak.profile.profiler import Profiler
from droidspeak.profile.proxy import ProxyCase, select_rule
from droidspeak.profile.result_rows import heldout_row
from droidspeak.sweep.console import entry_point
from droidspeak.track.records import question_set_digest
from droidspeak.track.results import read_rows
from droidspeak.zoo.family import build_family

log = logging.getLogger("proxy_study")


def _proxy_row(path: str) -> dict | None:
    rows = [r for r in read_rows(comparisons_path(path)) if r.get("comparison") == "proxy"]
    return rows[0] if rows else None


def toy_cases(pattern: str) -> list[ProxyCase]:
    """Every toy profile with a proxy comparison, as a decision rule sees it."""
    cases = []
    for path in sorted(glob.glob(pattern)):
        profile, row = load_profile(path), _proxy_row(path)
        if row is None or "proxy_scores" not in profile.extra:
            continue
        scores = {plan: (s["top1"], s["kl"]) for plan, s in profile.extra["proxy_scores"].items()}
        cases.append(ProxyCase(profile.pair, scores, row["proxy_positions"], profile.num_layers,
                               {p.plan: p.quality for p in profile.points}, profile.reference_quality))
    return cases


def heldout_rows(family, path: str, row: dict, split: str) -> list[dict]:
    """The receiver, the task search's plan and the proxy's plan of one real profile, scored on ``split``."""
    profile = load_profile(path)
    receiver, sender = family.load(profile.receiver), family.load(profile.sender)
    rows = read_rows(family.task_files[profile.task][split])
    profiler = Profiler(receiver, sender, profile.task, rows, batch_size=16)
    questions = question_set_digest(profile.task, split, len(rows), family.task_version(profile.task, split))
    plans = {"full_prefill": "full_prefill", "task_search": row["exhaustive_plan"], "proxy": row["proxy_plan"]}
    out = []
    for method, plan in plans.items():
        row_out = heldout_row(profiler, profile, profiler.evaluate(plan), pair=row["pair"], split=split,
                              method=method, family=family.root.name, question_set=questions,
                              identity={"profile": Path(path).name})
        out.append(row_out.to_dict())
        log.info("%s %s %s on %s: %.3f", row["pair"], method, plan, split, row_out.quality)
    return out


@entry_point("proxy_study")
def main(cfg: DictConfig) -> None:
    torch.set_num_threads(cfg.threads)
    out = Path(hydra.utils.to_absolute_path(cfg.out_dir))
    if cfg.page_only:
        rule = json.loads((out / "toy_rules.jsonl").read_text().splitlines()[0])["chosen"]
        log.info("wrote %s", write_proxy_page(out, command=cfg.command, tolerance=cfg.tolerance, rule=rule,
                                              template=hydra.utils.to_absolute_path(cfg.template)))
        return
    rule, outcomes = select_rule(toy_cases(cfg.toy_profiles), cfg.tolerance)
    real = {path: _proxy_row(path) for path in sorted(glob.glob(cfg.real_profiles))}
    real = {path: row for path, row in real.items() if row is not None}
    if not real:
        raise SystemExit(f"no profile with a proxy comparison matches {cfg.real_profiles}: run "
                         "experiments/profile_pair.py -m experiment=smollm2_proxy_profile first")
    ran = {row["proxy_rule"] for row in real.values()}
    if ran != {rule.name}:
        raise SystemExit(f"the toy family chooses the proxy rule {rule.name!r}, but the real profiles ran with "
                         f"{sorted(ran)}: profile them again with proxy_rule={rule.name}")
    family = build_family(cfg.zoo, progress=False, log=log.info)
    out.mkdir(parents=True, exist_ok=True)
    heldout = [r for path, row in real.items() for r in heldout_rows(family, path, row, cfg.split)]
    (out / "heldout.jsonl").write_text("".join(json.dumps(r) + "\n" for r in heldout))
    (out / "comparisons.jsonl").write_text("".join(json.dumps(row) + "\n" for row in real.values()))
    (out / "toy_rules.jsonl").write_text("".join(json.dumps({**o, "chosen": rule.name}) + "\n" for o in outcomes))
    log.info("wrote %s", write_proxy_page(out, command=cfg.command, tolerance=cfg.tolerance, rule=rule.name,
                                          template=hydra.utils.to_absolute_path(cfg.template)))


if __name__ == "__main__":
    main()
