"""The serving page (droidspeak.figures.serving_page): the SLO from the reference system's idle requests, the load each
system sustains within it, and a page whose every number comes from the rows."""

from __future__ import annotations

import json
import re

import pytest

from droidspeak.figures.serving_page import read_runs, serving_summary, write_serving_page
from droidspeak.figures.style import FigureDataError

TEMPLATE = "conf/pages/serving.md.j2"


def _rows(system, qps, ttfts, waits, *, refused=0):
    rows = [{"system": system, "qps": qps, "rid": i, "receiver": "r", "context_id": "c", "arrival": float(i),
             "prefill_start": i + w, "first_token": i + t, "last_token": i + t + 1.0, "tokens": 3, "queueing": w,
             "ttft": t, "tbt_mean": 0.5, "e2e": t + 1.0, "plan": "full_prefill", "cache_from": None, "answer": "a",
             "score": 1.0, "error": None} for i, (t, w) in enumerate(zip(ttfts, waits))]
    rows += [{**rows[0], "rid": len(rows) + i, "error": "unknown receiver"} for i in range(refused)]
    return rows


def _write(folder, system, qps, rows, seed=0):
    (folder / f"{system}-qps{qps}-{seed}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / f"{system}-qps{qps}-{seed}.run.json").write_text(json.dumps(
        {"system": system, "qps": qps, "seed": seed, "engine": "vllm" if system.startswith("vllm") else "droidspeak",
         "receivers": ["r"], "task": "t", "split": "test", "dtype": "float32",
         "threads": 2, "device": "cpu", "max_batch": 4, "plans": {}, "busy_seconds": {"prefill": 3.0, "decode": 1.0}}))


@pytest.fixture
def runs_dir(tmp_path):
    rows = tmp_path / "rows"
    rows.mkdir()
    _write(rows, "full_prefill", 0.1, _rows("full_prefill", 0.1, [1.0, 1.2, 1.1, 4.0], [0.0, 0.01, 0.02, 3.0]))
    _write(rows, "full_prefill", 0.4, _rows("full_prefill", 0.4, [2.0, 6.0, 7.0], [1.0, 4.0, 5.0]))
    _write(rows, "droidspeak", 0.1, _rows("droidspeak", 0.1, [0.8, 0.9], [0.0, 0.0]))
    _write(rows, "droidspeak", 0.4, _rows("droidspeak", 0.4, [1.0, 3.0], [0.0, 1.0]))
    _write(rows, "vllm", 0.1, _rows("vllm", 0.1, [1.0], [0.0], refused=1))
    _write(rows, "vllm_adapters", 0.1, _rows("vllm_adapters", 0.1, [1.5], [0.0]))
    _write(rows, "vllm_adapters", 0.4, _rows("vllm_adapters", 0.4, [9.0], [0.0]))
    return rows


def test_slo_is_from_idle_requests_and_sustained_loads_follow_it(runs_dir):
    summary = serving_summary(read_runs(runs_dir), slo_factor=4.0, reference="full_prefill")
    assert summary["single_ttft"] == pytest.approx(1.1) and summary["single_ttft_requests"] == 3
    assert summary["slo_seconds"] == pytest.approx(4.4)
    # full prefill: p90 at 0.4 qps is 7.0 > 4.4; droidspeak: 3.0 within; vllm refused one request: never sustained
    assert summary["throughput_at_slo"] == {"full_prefill": 0.1, "droidspeak": 0.4, "vllm": 0.0,
                                            "vllm_adapters": 0.1}
    # droidspeak sustained the highest load it ran: its limit is not found, so no ratio is claimed
    assert summary["at_least"] == {"full_prefill": False, "droidspeak": True, "vllm": False, "vllm_adapters": False}
    assert summary["ratio_to_reference"] == {"full_prefill": 1.0, "droidspeak": None, "vllm": 0.0,
                                             "vllm_adapters": 1.0}
    # the ratio against vLLM is against the way of serving it that sustained the most
    assert summary["vllm_best"] == "vllm_adapters" and summary["ratio_to_vllm"]["full_prefill"] == 1.0


def test_page_numbers_come_from_the_summary(runs_dir, tmp_path):
    out = tmp_path / "page"
    write_serving_page(runs_dir, out, TEMPLATE, slo_factor=4.0, reference="full_prefill", command="make x")
    page = (out / "README.md").read_text()
    assert "**4.40 s**" in page and "at least 0.4 requests / s (the highest load it was run at" in page
    assert "none of the loads it was run at (the lightest: 0.1 requests / s)" in page  # vllm refused one
    # our full prefill: its limit lies in [0.1, 0.4), vllm_adapters' in [0.1, 0.4): the ratio is 1 within 0.25-4
    assert ("0.1 requests / s (not 0.4: its limit lies between); 1.00× vLLM (LoRA adapters, prefix caching), "
            "0.25–4.00×") in page
    assert (out / "fig15_serving.png").is_file() and json.loads((out / "summary.json").read_text())["slo_seconds"]
    again = tmp_path / "again"
    write_serving_page(runs_dir, again, TEMPLATE, slo_factor=4.0, reference="full_prefill", command="make x")
    assert (again / "README.md").read_text() == page
    assert not re.search(r"\{\{|\}\}", page)


def test_a_second_trace_seed_lengthens_the_trace_its_load_is_judged_on(runs_dir, tmp_path):
    """A second trace seed at a load: the verdict reads the p90 of both runs' requests pooled, so a run that misses
    alone can be outweighed (a seed is a longer trace, not another chance to miss), and the page names seeds."""
    _write(runs_dir, "droidspeak", 0.4, _rows("droidspeak", 0.4, [1.0, 9.0], [0.0, 5.0]), seed=1)
    summary = serving_summary(read_runs(runs_dir), slo_factor=4.0, reference="full_prefill")
    # pooled [1, 3, 1, 9]: p90 7.2 > 4.4, so 0.4 is missed and droidspeak's limit is found
    assert summary["seeds"] == [0, 1] and summary["throughput_at_slo"]["droidspeak"] == 0.1
    assert summary["ratio_to_reference"]["droidspeak"] == 1.0
    assert [(v["qps"], v["seeds"], v["requests"]) for v in summary["pooled_loads"]] == [(0.4, [0, 1], 4)]
    write_serving_page(runs_dir, tmp_path / "page", TEMPLATE, slo_factor=4.0, reference="full_prefill", command="x")
    page = (tmp_path / "page" / "README.md").read_text()
    assert "| 0.4 · seed 1 |" in page and "several trace seeds (0, 1" in page
    assert "| DroidSpeak (profiled plans) | 0.4 | 0, 1 | 4 | 7.20 | no |" in page

    quiet, loud = [1.0] * 36 + [9.0] * 2, [1.0] * 8 + [9.0] * 2  # alone: p90 1.0 (meets) and 9.0 (misses)
    _write(runs_dir, "droidspeak", 0.4, _rows("droidspeak", 0.4, quiet, [0.0] * 38))
    _write(runs_dir, "droidspeak", 0.4, _rows("droidspeak", 0.4, loud, [0.0] * 10), seed=1)
    summary = serving_summary(read_runs(runs_dir), slo_factor=4.0, reference="full_prefill")
    assert summary["throughput_at_slo"]["droidspeak"] == 0.4  # pooled: 4 slow of 48, p90 1.0


def test_a_miss_at_a_lower_load_bounds_the_limit_whatever_a_higher_load_did():
    from droidspeak.figures.serving_page import highest_sustained

    verdicts = [("a", 0.1, True), ("a", 0.3, True), ("a", 0.2, False), ("b", 0.1, False), ("b", 0.2, True)]
    assert highest_sustained(verdicts) == {"a": 0.1}  # b missed its lightest load: it sustains none


def test_percentiles_interpolate_so_p50_is_the_median():
    from droidspeak.serve.latency import percentile

    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.5  # not the upper middle value
    assert percentile(list(map(float, range(11))), 90) == pytest.approx(9.0)
    assert percentile([1.0, 2.0], 90) == pytest.approx(1.9) and percentile([5.0], 90) == 5.0


def test_no_runs_or_no_idle_request_is_an_error(tmp_path, runs_dir):
    with pytest.raises(FigureDataError, match="no serving runs"):
        read_runs(tmp_path / "nothing")
    busy = tmp_path / "busy"
    busy.mkdir()
    _write(busy, "full_prefill", 0.1, _rows("full_prefill", 0.1, [5.0], [2.0]))
    with pytest.raises(FigureDataError, match="found the server idle"):
        serving_summary(read_runs(busy), slo_factor=4.0, reference="full_prefill")


def test_a_load_we_did_not_run_is_compared_with_our_lightest_run_of_its_seed(runs_dir):
    """A trace seed draws the same requests at every load, so a system run at a load our full prefill skipped is still
    compared, request by request, with ours (at our lightest load of that seed); a model asked in another's place is
    compared under both names, and a request over another context never."""
    rows = _rows("droidspeak", 0.3, [1.0] * 4, [0.0] * 4)
    rows[1]["receiver"], rows[2]["context_id"], rows[3]["receiver"] = "stand-in", "another context", "undeclared"
    _write(runs_dir, "droidspeak", 0.3, rows)
    for name, readers in (("full_prefill-qps0.1-0", ["r", "q"]), ("droidspeak-qps0.3-0", ["stand-in", "q"])):
        summary_path = runs_dir / f"{name}.run.json"  # the stand-in is declared by its place in the readers' order
        summary_path.write_text(json.dumps(json.loads(summary_path.read_text()) | {"readers": readers}))
    summary = serving_summary(read_runs(runs_dir), slo_factor=4.0, reference="full_prefill")
    compared = [(r["reference_qps"], r["receiver"], r["requests"], r["same"], r["stand_in"])
                for r in summary["agreement"] if r["system"] == "droidspeak" and r["qps"] == 0.3]
    assert compared == [(0.1, "r", 1, 1, False), (0.1, "stand-in (ours: r)", 1, 1, True)]


def test_the_limits_are_read_again_at_other_slos_and_from_the_first_seed_alone(runs_dir):
    _write(runs_dir, "droidspeak", 0.4, _rows("droidspeak", 0.4, [1.0, 9.0], [0.0, 5.0]), seed=1)
    readings = {r["reading"]: r["limits"] for r in serving_summary(
        read_runs(runs_dir), slo_factor=4.0, reference="full_prefill")["other_readings"]}
    assert readings["4×, trace seed 0 only"]["droidspeak"] == "≥ 0.4"  # seed 0 alone met 0.4 (p90 2.8)
    assert readings["4× (the SLO)"]["droidspeak"] == "0.1" and readings["5×"]["full_prefill"] == "0.1"
    assert readings["3×"]["vllm"] == "none"
