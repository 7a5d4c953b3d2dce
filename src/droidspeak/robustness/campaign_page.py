"""``reports/robustness.md`` from the campaign's tallies (kept beside it as ``robustness.json``): the tables here,
the prose in ``conf/pages/robustness.md.j2``; every trial with its expected and observed outcome."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

from droidspeak.figures.template import render_page
from droidspeak.markdown import table
from droidspeak.robustness.bad_inputs import OUTCOMES


def _mib(n: int | None) -> str:
    return "–" if n is None else f"{n / 2**20:.2f} MiB"


def _yes(ok: bool) -> str:
    return "yes" if ok else "**NO**"


def _overview(tallies: Mapping) -> list[str]:
    inputs, kills, writers, memory = tallies["bad_inputs"], tallies["kills"], tallies["writers"], tallies["memory"]
    observed = Counter(o["observed"] for o in inputs)
    killed = [k for k in kills if k["killed"]]
    bounded = memory["bounded"]
    return table(["what was tried", "expected", "observed"], [
        [f"{len(inputs)} bad inputs", "one clear error each",
         ", ".join(f"{observed[kind]} {kind.removesuffix(' error')}" for kind in OUTCOMES)],
        [f"{len(killed)} SIGKILLs mid-sweep ({len(kills)} trials), each resumed",
         "no point lost or duplicated, identical qualities, no corrupt cache served",
         f"{sum(k['ok'] for k in killed)} of {len(killed)}"],
        [f"{writers['writers']} processes sweeping into one results file and cache folder",
         "no torn row, no duplicate, no half-written cache read", "yes" if writers["ok"] else "NO"],
        [f"memory tier bounded to {_mib(bounded['bound_bytes'])} over {bounded['distinct_contexts']} contexts, each "
         "asked for twice", "peak within the bound, evicted contexts prefilled anew, identical answers",
         f"peak {_mib(bounded['peak_store_bytes'])}, {bounded['sender_prefills']} sender prefills, "
         f"{'identical' if memory['identical_scores'] else 'DIFFERENT'} answers"],
    ])


def markdown(tallies: Mapping, *, command: str, template: str | Path) -> str:
    kills, writers, memory = tallies["kills"], tallies["writers"], tallies["memory"]
    context = {
        "command": command, "config": tallies["config"], "seconds": tallies["seconds"],
        "clean_sweep_seconds": tallies["clean_sweep_seconds"], "memory": memory,
        "overview_table": "\n".join(_overview(tallies)),
        "inputs_table": "\n".join(table(
            ["group", "input", "observed", "error", "message (first line)"],
            [[o["group"], o["name"], o["observed"], o["error"] or "–",
              f"`{(o['message'] or '').replace('|', '/')[:160]}`"] for o in tallies["bad_inputs"]])),
        "kills_table": "\n".join(table(
            ["trial", "killed at", "killed", "rows before resume", "missing", "duplicated", "differing quality",
             "bad cache files", "set aside / temp files", "ok"],
            [[k["trial"], k["fault"] or "random moment", "yes" if k["killed"] else "no (finished first)",
              k["rows_before_resume"], k["check"]["missing"], k["check"]["duplicated"], k["check"]["differing"],
              k["check"]["bad_cache_files"], f"{k['check']['set_aside']} / {k['check']['temporary_files']}",
              _yes(k["ok"])] for k in kills])),
        "modes": ", ".join(f"{m} {n}" for m, n in sorted(Counter(k["mode"] for k in kills if k["killed"]).items())),
        "writers_table": "\n".join(table(
            ["writers", "exit codes", "rows", "missing", "duplicated", "differing", "torn lines",
             "rejected cache reads", "ok"],
            [[writers["writers"], writers["exit_codes"], writers["check"]["rows"], writers["check"]["missing"],
              writers["check"]["duplicated"], writers["check"]["differing"], writers["check"]["torn_lines"],
              writers["rejected_cache_reads"], _yes(writers["ok"])]])),
        "memory_table": "\n".join(table(
            ["memory tier", "peak held", "evictions", "sender prefills", "distinct contexts", "resident growth",
             "quality"],
            [[_mib(run["bound_bytes"]) if run["bound_bytes"] else "unbounded", _mib(run["peak_store_bytes"]),
              run["evictions"], run["sender_prefills"], run["distinct_contexts"], _mib(run["rss_growth_bytes"]),
              f"{run['quality']:.3f}"] for run in (memory["bounded"], memory["unbounded"])])),
    }
    return render_page(template, context, {"mib": _mib})


def write_page(tallies: Mapping, out_dir: str | Path, *, command: str, template: str | Path) -> Path:
    """``robustness.json`` (the tallies, so the page re-renders without a rerun) and ``robustness.md``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "robustness.json").write_text(json.dumps(tallies, indent=1, sort_keys=True) + "\n")
    page = out / "robustness.md"
    page.write_text(markdown(tallies, command=command, template=template))
    return page
