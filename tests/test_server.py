"""The executing server (droidspeak.serve.server): its answers are the engine's, a receiver reads another model's
cache with the pair's plan, every request gets a row, and bad input is refused for that request alone."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from droidspeak.engine.answers import Questions, predict, prefill_contexts
from droidspeak.engine.batch import prefill_rows
from droidspeak.engine.cache import cache_key
from droidspeak.engine.infer import generate
from droidspeak.engine.prefill import receiver_prefill, sender_prefill
from droidspeak.errors import DroidSpeakError
from droidspeak.serve.cohort import Cohort
from droidspeak.serve.server import Server
from droidspeak.serve.workload import BadLine, Query, poisson_queries, read_trace, shared_context_queries, write_trace
from droidspeak.store import DiskStore, MemoryStore
from helpers import qa_rows

NEW = 4
ROOT = Path(__file__).resolve().parents[1]


def _questions(model, rows):
    return Questions(rows, model.tokenizer, max_new_tokens=NEW, metric=lambda a, refs: float(a in refs))


def _server(llama_pair, rows, store=None, plan="recompute:1-2", **kwargs):
    base, tuned = llama_pair
    return Server({"base": base, "tuned": tuned}, {("tuned", "base"): plan} if plan else {},
                  {r["context_id"]: r["context"] for r in rows}, MemoryStore(pin=False) if store is None else store,
                  max_new_tokens=NEW, **kwargs)


def _query(rid, arrival, receiver, row):
    return Query(rid, arrival, receiver, row["context_id"], row["question"], tuple(row["answers"]))


def test_cohort_steps_give_generates_tokens(llama_pair):
    """Step-wise greedy decoding over a batch of two contexts equals transformers' generate on the same cache."""
    _, tuned = llama_pair
    rows = qa_rows(n_contexts=2, questions=2, seed=3)
    questions = _questions(tuned, rows)
    prefill = lambda: prefill_rows([r["context_id"] for r in rows], lambda ids: receiver_prefill(  # noqa: E731
        tuned, [questions.contexts[c] for c in ids], "full_prefill"))
    expected = [t.tolist() for t in generate(tuned, prefill(), questions.suffixes, max_new_tokens=NEW)]
    cohort = Cohort(tuned, prefill(), questions.suffixes, NEW)
    steps = 0
    while not cohort.done:
        cohort.step()
        steps += 1
    assert cohort.tokens == expected
    assert steps == max(len(t) for t in expected)


def test_served_answers_are_the_engines_and_the_second_reader_reuses(llama_pair):
    """base reads a context first (full prefill, stored); tuned then asks over it and is served from base's cache
    with the pair's plan; both answers are what the engine gives for that plan."""
    base, tuned = llama_pair
    rows = qa_rows(n_contexts=1, questions=2, seed=5)
    served = _server(llama_pair, rows).run([_query(0, 0.0, "base", rows[0]), _query(1, 0.3, "tuned", rows[1])])
    assert [r.error for r in served] == [None, None]
    assert (served[0].plan, served[0].cache_from) == ("full_prefill", None)
    assert (served[1].plan, served[1].cache_from) == ("recompute:1-2", "base")
    caches = prefill_contexts(base, _questions(base, rows))
    assert served[0].answer == predict(base, _questions(base, rows[:1]), "full_prefill")[0]
    assert served[1].answer == predict(tuned, _questions(tuned, rows[1:]), "recompute:1-2", caches)[0]
    for row in served:
        assert 0 <= row.queueing <= row.ttft <= row.e2e
        assert row.tokens == len(row.token_times) >= 1
    assert served[1].arrival == 0.3 and served[1].prefill_start >= 0.3


def test_own_cache_serves_a_receivers_later_questions_exactly(llama_pair):
    """A receiver's second question over a context it prefilled reuses its own cache (a prefix cache)."""
    _, tuned = llama_pair
    rows = qa_rows(n_contexts=1, questions=2, seed=6)
    served = _server(llama_pair, rows).run([_query(0, 0.0, "tuned", rows[0]), _query(1, 0.2, "tuned", rows[1])])
    assert [(r.cache_from, r.plan) for r in served] == [(None, "full_prefill"), ("own", "full_reuse")]
    assert served[1].answer == predict(tuned, _questions(tuned, rows[1:]), "full_prefill")[0]


def test_without_a_plan_a_pair_never_shares_and_a_batch_holds_one_receiver(llama_pair):
    rows = qa_rows(n_contexts=2, questions=2, seed=7)
    queries = [_query(i, 0.0, "base" if i % 2 else "tuned", row) for i, row in enumerate(rows)]
    served = _server(llama_pair, rows, plan=None, max_batch=8).run(queries)
    assert all(r.error is None and r.cache_from in (None, "own") for r in served)
    first = {r.receiver: r.prefill_start for r in served}
    assert len({r.prefill_start for r in served if r.receiver == "tuned"}) == 1  # tuned's two: one batch
    assert first["tuned"] != first["base"]


def test_bad_input_is_refused_alone_and_the_rest_are_served(llama_pair, tmp_path):
    """Unknown receiver or context, a context past the model's positions, a malformed trace line, and a cache file that
    another model wrote under this receiver's key: each refused with why, every other request served."""
    base, tuned = llama_pair
    rows = qa_rows(n_contexts=2, questions=1, seed=8)
    long_row = {**rows[0], "context_id": "long", "context": " ".join(["w5"] * 5000)}
    store = DiskStore(tmp_path / "store")
    caches = prefill_contexts(base, _questions(base, rows[1:]))
    written = store.put(caches[rows[1]["context_id"]])
    forged = cache_key(tuned.fingerprint.digest, caches[rows[1]["context_id"]].token_ids)
    shutil.copy(store.path(written), store.path(forged))
    store.close()
    store = DiskStore(tmp_path / "store")
    trace = tmp_path / "trace.jsonl"
    write_trace([_query(0, 0.0, "tuned", rows[0]), _query(1, 0.0, "nobody", rows[0]),
                 Query(2, 0.0, "tuned", "missing", "w1")], trace)
    with trace.open("a") as out:
        out.write("{not json\n")
        out.write('{"arrival": 0.1, "receiver": "tuned"}\n')
    queries = [*read_trace(trace), _query(5, 0.1, "tuned", long_row), _query(6, 0.1, "tuned", rows[1]),
               _query(7, 0.2, "base", rows[0])]
    assert isinstance(queries[3], BadLine) and isinstance(queries[4], BadLine)
    contexts = {r["context_id"]: r["context"] for r in [*rows, long_row]}
    served = Server({"base": base, "tuned": tuned}, {}, contexts, store, max_new_tokens=NEW).run(queries)
    errors = {r.rid: r.error for r in served}
    assert errors[0] is None and errors[7] is None
    assert "unknown receiver 'nobody'" in errors[1]
    assert "unknown context 'missing'" in errors[2]
    assert "not JSON" in errors[3] and "lacks context_id, question" in errors[4]
    assert "positions" in errors[5]
    assert "not the one its name says" in errors[6]
    assert [r.rid for r in served] == list(range(8))


def test_the_store_stays_in_its_bound_and_evicted_contexts_are_prefilled_again(llama_pair):
    base, _ = llama_pair
    rows = qa_rows(n_contexts=3, questions=1, seed=9)
    store = MemoryStore(pin=False)
    server = _server(llama_pair, rows, store=store, max_batch=1)
    one = sender_prefill(base, [_questions(base, rows[:1]).contexts[rows[0]["context_id"]]],
                         e_layers=server.e_layers["base"])[0].nbytes()  # what the server stores for base: E at 1
    store.capacity_bytes = int(1.5 * one)
    queries = [_query(i, 0.05 * i, "base", row) for i, row in enumerate(rows + rows[:1])]
    served = server.run(queries)
    assert [r.cache_from for r in served] == [None, None, None, None]  # c0 was evicted by c1, c2
    assert store.peak_bytes <= store.capacity_bytes and store.evictions >= 2


def test_a_plan_must_be_concrete_and_name_held_models(llama_pair):
    rows = qa_rows(n_contexts=1, questions=1)
    with pytest.raises(DroidSpeakError, match="not a reuse plan"):
        _server(llama_pair, rows, plan="profile:x.json")
    with pytest.raises(DroidSpeakError, match="does not hold: ghost"):
        Server({"base": llama_pair[0]}, {("base", "ghost"): "full_reuse"}, {}, MemoryStore(pin=False),
               max_new_tokens=NEW)


def test_poisson_queries_and_traces_round_trip(tmp_path):
    rows = qa_rows(n_contexts=3, questions=2)
    queries = poisson_queries(rows, ["a", "b"], qps=4.0, count=20, seed=1)
    assert [q.rid for q in queries] == list(range(20))
    assert all(b.arrival > a.arrival for a, b in zip(queries, queries[1:]))
    assert {q.receiver for q in queries} == {"a", "b"}
    assert read_trace(write_trace(queries, tmp_path / "t.jsonl")) == queries
    with pytest.raises(ValueError):
        poisson_queries(rows, ["a"], qps=0, count=3)
    assert torch.tensor([q.arrival for q in queries]).diff().mean() == pytest.approx(0.25, rel=0.6)


def test_shared_context_sessions_read_every_context_by_each_reader_in_order():
    """Each drawn context is asked by every reader, the first reader first; contexts are drawn without replacement
    before any repeats; a shuffled order still gives every reader one question per context."""
    rows = qa_rows(n_contexts=3, questions=2)
    queries = shared_context_queries(rows, ["base", "tuned"], qps=2.0, count=8, seed=4)
    assert [q.rid for q in queries] == list(range(8))
    assert all(b.arrival > a.arrival for a, b in zip(queries, queries[1:]))
    sessions = [queries[i:i + 2] for i in range(0, 8, 2)]
    assert all([q.receiver for q in s] == ["base", "tuned"] and s[0].context_id == s[1].context_id for s in sessions)
    assert all(s[0].question != s[1].question for s in sessions)  # two questions of the context, one each
    assert len({s[0].context_id for s in sessions[:3]}) == 3  # every context before any again
    valid = {(r["context_id"], r["question"], tuple(r["answers"])) for r in rows}
    assert all((q.context_id, q.question, q.answers) in valid for q in queries)
    shuffled = shared_context_queries(rows, ["a", "b", "c"], qps=2.0, count=30, seed=1, shuffle_readers=True)
    orders = {tuple(q.receiver for q in shuffled[i:i + 3]) for i in range(0, 30, 3)}
    assert all(sorted(order) == ["a", "b", "c"] for order in orders) and len(orders) > 1
    assert len(shared_context_queries(rows, ["a", "b", "c"], qps=1.0, count=7)) == 7  # a session cut at the count
    with pytest.raises(ValueError, match="twice"):
        shared_context_queries(rows, ["a", "a"], qps=1.0, count=2)


def test_a_cacheblend_plan_is_served_with_the_engines_answer(llama_pair):
    """A receiver reads another model's cache with a token-level CacheBlend plan (no E cache needed): its answer
    is the engine's for that plan over the sender's cache."""
    base, tuned = llama_pair
    rows = qa_rows(n_contexts=1, questions=2, seed=5)
    served = _server(llama_pair, rows, plan="cacheblend:0.5@1").run([_query(0, 0.0, "base", rows[0]),
                                                                     _query(1, 0.0, "tuned", rows[1])])
    assert [(r.error, r.cache_from, r.plan) for r in served] == [(None, None, "full_prefill"),
                                                                 (None, "base", "cacheblend:0.5@1")]
    caches = prefill_contexts(base, _questions(base, rows))
    assert served[1].answer == predict(tuned, _questions(tuned, rows[1:]), "cacheblend:0.5@1", caches)[0]


def test_serve_script_on_the_mini_family_shares_a_context_and_refuses_a_bad_line(mini_family, tmp_path):
    """The CI smoke of the executing server: base reads a context, ft-mdqa then asks over it and is served from
    base's cache with the pair's plan; a malformed trace line is refused alone; one row per line."""
    from droidspeak.track.results import read_rows

    family = mini_family[1]
    row = read_rows(family.task_files["mdqa"]["test"])[0]
    trace = tmp_path / "trace.jsonl"
    write_trace([_query(0, 0.0, "base", row), _query(1, 0.5, "ft-mdqa", row)], trace)
    with trace.open("a") as out:
        out.write('{"arrival": 0.6, "receiver": "ft-mdqa", "context_id": "nowhere", "question": "q"}\n')
    out = tmp_path / "requests.jsonl"
    env = {**os.environ, "DROIDSPEAK_CACHE": str(family.root.parent), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, str(ROOT / "experiments" / "serve.py"), "zoo=mini",
                           f"workload.trace={trace}", f"out={out}", "threads=1", f"hydra.run.dir={tmp_path / 'run'}"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    served = read_rows(out)
    assert [(r["rid"], r["cache_from"], r["plan"]) for r in served[:2]] == [(0, None, "full_prefill"),
                                                                            (1, "base", "recompute:1-2")]
    assert "unknown context 'nowhere'" in served[2]["error"]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["requests"] == 3 and summary["refused"] == 1 and summary["ttft_p50"] > 0
    assert json.loads(out.with_suffix(".run.json").read_text()) == summary
    assert summary["system"] == "droidspeak" and summary["qps"] is None  # a trace: no offered load
    assert summary["busy_seconds"]["prefill"] > 0 and summary["plans"] == {"ft-mdqa<-base": "recompute:1-2"}
    steps = read_rows(out.with_suffix(".steps.jsonl"))
    assert {s["kind"] for s in steps} == {"context_prefill", "prefill", "decode"}
    assert [(s["cache_from"], s["plan"]) for s in steps if s["kind"] == "prefill"] == [
        (None, "full_reuse"), ("base", "recompute:1-2")]  # base's own full prefill, then ft-mdqa reading it

    refused = subprocess.run([sys.executable, str(ROOT / "experiments" / "serve.py"), "zoo=mini", f"out={out}",
                              "threads=1", "workload.readers=[base,ghost]", f"hydra.run.dir={tmp_path / 'run2'}"],
                             env=env, capture_output=True, text=True, timeout=600)
    assert refused.returncode != 0 and "workload.readers ghost: not among the receivers" in refused.stderr
    assert read_rows(out) == served  # refused before any work: the earlier run's rows are kept

    alone = tmp_path / "alone.jsonl"  # a check run: ft-mdqa's request again, base's left out (ids and arrivals kept)
    done = subprocess.run([sys.executable, str(ROOT / "experiments" / "serve.py"), "zoo=mini", f"out={alone}",
                           f"workload.trace={trace}", "workload.only=[ft-mdqa]", "check=alone", "threads=1",
                           f"hydra.run.dir={tmp_path / 'run3'}"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    again = read_rows(alone)
    assert [(r["rid"], r["cache_from"], r["plan"]) for r in again[:1]] == [(1, None, "full_prefill")]  # no base cache
    assert [r["rid"] for r in again] == [1, 2] and "unknown context" in again[1]["error"]  # the bad line still refused
    assert json.loads(alone.with_suffix(".run.json").read_text())["check"] == "alone"


def test_the_modelled_loop_charges_each_step_its_cost_on_a_virtual_clock():
    from droidspeak.serve.modelled import ModelledServer, StepCosts

    costs = StepCosts(context_prefill=(1.0, 0.01), prefill={"full_reuse": (0.2, 0.0), "recompute:1-2": (0.5, 0.0)},
                      decode=(0.1, 0.05))
    server = ModelledServer({("tuned", "base"): "recompute:1-2"}, costs, receivers=["base", "tuned"],
                            context_tokens={"c": 100}, output_tokens={0: 3, 1: 2}, context_owner={},
                            bytes_per_token={"base": 10.0}, capacity_bytes=None, max_new_tokens=4, max_batch=4)
    first, second = server.run([Query(0, 0.0, "base", "c", ""), Query(1, 10.0, "tuned", "c", "")])
    # base: its full prefill (1 + 0.01 * 100) then full_reuse of it (0.2, its first token), two decode steps of 0.15
    assert (first.cache_from, first.plan) == (None, "full_prefill")
    assert first.ttft == pytest.approx(2.2) and first.e2e == pytest.approx(2.5) and first.tokens == 3
    # tuned, arriving when the server is idle: base's cache read with the pair's plan (0.5), one decode step
    assert (second.cache_from, second.plan) == ("base", "recompute:1-2")
    assert second.ttft == pytest.approx(0.5) and second.e2e == pytest.approx(0.65)
    assert server.tier == {("base", "c"): 1000}


def test_replaying_an_executed_run_reproduces_its_cache_decisions(llama_pair):
    from droidspeak.serve.modelled import StepCosts, replay

    rows = qa_rows(n_contexts=2, questions=2, seed=11)
    server = _server(llama_pair, rows)
    queries = [_query(0, 0.0, "base", rows[0]), _query(1, 0.3, "tuned", rows[1]), _query(2, 0.6, "tuned", rows[2]),
               _query(3, 0.9, "base", rows[1])]
    executed = [row.record() for row in server.run(queries)]
    run = {"rows": executed, "steps": server.steps, "plans": {"tuned<-base": "recompute:1-2"}, "max_batch": 4,
           "store_mib": None, "context_owners": {}}
    modelled = replay(run, StepCosts.fit(server.steps))
    assert [(r["cache_from"], r["plan"], r["tokens"]) for r in modelled] == [
        (r["cache_from"], r["plan"], r["tokens"]) for r in executed]
    assert [r["cache_from"] for r in executed] == [None, "base", None, "own"]
