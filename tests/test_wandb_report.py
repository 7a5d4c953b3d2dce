"""The W&B Report is built by code: offline, its specification holds a section per (pair, task) and the figures."""

from __future__ import annotations

import json

from droidspeak.track.wandb_report import build_report, write_offline


def test_the_offline_specification_has_the_expected_panels(tmp_path):
    rows = [{"pair": p, "task": t, "kind": "eval"} for p, t in (("a<-b", "qa"), ("a<-b", "code"), ("c<-d", "qa"))]
    held = [{"pair": "a<-b", "task": "qa", "rows": [
        {"method": "full_prefill", "plan": "full_prefill", "quality": 0.9, "ci": [0.8, 1.0], "speedup": 1.0},
        {"method": "profile", "plan": "recompute:2-5", "quality": 0.88, "ci": [0.8, 0.95], "speedup": 2.5}]}]
    (tmp_path / "fig11_profile_pareto.png").write_bytes(b"png")
    report = build_report(rows, project="droidspeak", entity="me", group="demo", held_out=held)
    spec = json.loads(write_offline(report, tmp_path / "out", figures_dir=tmp_path).read_text())
    assert spec["type"] == "Report" and spec["project"] == "droidspeak" and spec["entity"] == "me"
    headings = [b["text"] for b in spec["blocks"] if b["type"] == "H3"]
    assert headings == ["a<-b on code", "a<-b on qa", "c<-d on qa"]  # grouped by pair
    texts = [b["text"] for b in spec["blocks"] if b["type"] == "MarkdownBlock"]
    assert any("`recompute:2-5`" in t and "0.800–0.950" in t for t in texts)  # the held-out chosen plan
    grids = [b for b in spec["blocks"] if b["type"] == "PanelGrid"]
    assert len(grids) == 4 and all(g["runsets"][0]["filters"].startswith('Config("run_name") == "demo"') for g in grids)
    tables = [p["table_name"] for p in grids[-1]["panels"] if p["type"] == "WeavePanelSummaryTable"]
    assert tables == ["pareto/a<-b/code", "pareto/a<-b/qa", "pareto/c<-d/qa"]
    assert (tmp_path / "out" / "fig11_profile_pareto.png").exists()
