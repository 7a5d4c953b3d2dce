"""A W&B Report for one sweep, built by code with ``wandb-workspaces`` (the library W&B maintains for reports).

Per (pair, task), grouped by pair: the quality-vs-speedup scatter of the sweep's runs, the Fig. 6 bars (quality
per method), the chosen plan (held out where the sweep has it, else the in-sample fewest-layer plan) and the
runs table; then the figures run's media (profile frontiers, Pareto plots) and its Pareto tables.

Offline (no login needed) the report is written as a JSON specification, with the figures copied beside it;
``publish`` saves it to W&B and returns its URL. Runs are matched by the config the main job logs (``run_name``,
``pair.name``, ``task.name``), so the report shows exactly the sweep's points.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path

FIGURE_KEYS = ("fig06_quality_bars", "fig11_profile_pareto", "fig14_quality_vs_speedup", "fig07_layer_sensitivity")


def _runset(wr, project: str, entity: str, group: str, pair: str | None = None, task: str | None = None):
    filters = [f'Config("run_name") == "{group}"']
    if pair is not None:
        filters.append(f'Config("pair.name") == "{pair}"')
    if task is not None:
        filters.append(f'Config("task.name") == "{task}"')
    return wr.Runset(project=project, entity=entity, name=pair or group, filters=" and ".join(filters))


def _chosen_text(entry: Mapping | None, held: Mapping | None) -> str:
    if held is not None:
        chosen = next((e for e in held["rows"] if e["method"] == "profile"), None)
        if chosen is not None:
            ci = chosen["ci"]
            interval = "" if ci is None else f" (95% CI {ci[0]:.3f}–{ci[1]:.3f})"
            return (f"Plan chosen on the profile split: `{chosen['plan']}`, {chosen['quality']:.3f}{interval} on the "
                    f"test split, speedup {chosen['speedup'] or 0:.2f}×.")
    if entry is not None and entry.get("chosen_plan"):
        return (f"Fewest layers within {entry['tolerance']:.0%} (in sample): `{entry['chosen_plan']}`, "
                f"{entry['chosen_quality']:.3f} vs the receiver's {entry['receiver']:.3f}.")
    return "No plan within the tolerance was measured in this sweep."


def build_report(rows: Iterable[Mapping], *, project: str, entity: str, group: str, summary: list[dict] | None = None,
                 held_out: list[dict] | None = None, title: str | None = None):
    """The wandb-workspaces Report object (nothing is sent anywhere)."""
    import wandb_workspaces.reports.v2 as wr

    panels: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        if row.get("kind", "eval") == "eval":
            panels[row["pair"]].add(row["task"])
    in_sample = {(e["pair"], e["task"]): e for e in summary or []}
    held = {(e["pair"], e["task"]): e for e in held_out or []}
    blocks = [wr.H1(title or f"droidspeak sweep `{group}`"),
              wr.P(f"Every point of the sweep `{group}` is one W&B run; quality is the task's metric, speedup the "
                   "receiver's full prefill time over the plan's, same process."), wr.TableOfContents()]
    for pair in sorted(panels):
        blocks.append(wr.H2(pair))
        for task in sorted(panels[pair]):
            blocks += [wr.H3(f"{pair} on {task}"),
                       wr.MarkdownBlock(_chosen_text(in_sample.get((pair, task)), held.get((pair, task)))),
                       wr.PanelGrid(runsets=[_runset(wr, project, entity, group, pair, task)], panels=[
                           wr.ScatterPlot(title="quality vs speedup", x=wr.SummaryMetric("speedup"),
                                          y=wr.SummaryMetric("quality")),
                           wr.BarPlot(title="Fig. 6: quality per method", metrics=[wr.SummaryMetric("quality")],
                                      groupby=wr.Config("method.name"), groupby_aggfunc="mean"),
                           wr.ScatterPlot(title="quality vs recomputed fraction",
                                          x=wr.SummaryMetric("recomputed_fraction"), y=wr.SummaryMetric("quality")),
                       ])]
    figures_run = wr.Runset(project=project, entity=entity, name="figures",  # the run experiments/figures.py logs
                            filters=f'Config("run_name") == "{group}" and Config("job") == "figures"')
    blocks += [wr.H2("Profile frontiers and Pareto tables"),
               wr.PanelGrid(runsets=[figures_run], panels=[
                   wr.MediaBrowser(title="figures", media_keys=[f"figures/{key}" for key in FIGURE_KEYS]),
                   *[wr.WeavePanelSummaryTable(table_name=f"pareto/{pair}/{task}")
                     for pair in sorted(panels) for task in sorted(panels[pair])],
               ])]
    return wr.Report(project=project, entity=entity, title=title or f"droidspeak: {group}", blocks=blocks,
                     description=f"Built by experiments/wandb_report.py from the sweep {group}.")


def specification(report) -> dict:
    """A JSON-able description of the report: every block and panel with its type and public fields."""
    def walk(node):
        if dataclasses.is_dataclass(node) and not isinstance(node, type):
            fields = {
                f.name: walk(getattr(node, f.name)) for f in dataclasses.fields(node) if not f.name.startswith("_")
            }
            return {"type": type(node).__name__, **{k: v for k, v in fields.items() if v not in (None, [], {}, "")}}
        if isinstance(node, (list, tuple)):
            return [walk(v) for v in node]
        if isinstance(node, dict):
            return {str(k): walk(v) for k, v in node.items()}
        return node if isinstance(node, (str, int, float, bool)) or node is None else str(node)

    return walk(report)


def write_offline(report, out_dir: str | Path, figures_dir: str | Path | None = None) -> Path:
    """The specification as ``wandb_report.json`` (and the figures it shows copied beside it)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "wandb_report.json"
    path.write_text(json.dumps(specification(report), indent=1) + "\n")
    if figures_dir is not None:
        for key in FIGURE_KEYS:
            source = Path(figures_dir) / f"{key}.png"
            if source.exists() and source.resolve() != (out / source.name).resolve():
                shutil.copy2(source, out / source.name)
    return path


def publish(report) -> str:
    """Save the report to W&B (needs a login) and return its URL."""
    report.save()
    return report.url
