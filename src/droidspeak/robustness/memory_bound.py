"""The memory bound: the lm-eval backend over many distinct contexts with a small ``max_cache_gb``.

Runs one task through lm-eval with the sender-cache memory tier bounded to a few contexts, and again unbounded,
each twice over in one backend (the second pass asks for every context again). Every per-question score must be
identical: an evicted context is prefilled anew, never served stale or from another context. The tier's peak
must stay within the bound, and the process's resident memory growth is reported beside it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from droidspeak.lmeval.task_yaml import embedded_task_name, write_embedded_tasks


def resident_bytes() -> int:
    """This process's resident set size now (Linux /proc; 0 elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    import resource

    return pages * resource.getpagesize()


@dataclass
class MemoryRun:
    bound_bytes: int | None
    peak_store_bytes: int
    evictions: int
    sender_prefills: int
    distinct_contexts: int
    rss_growth_bytes: int  # peak resident memory during the run minus before it
    quality: float
    per_sample: list[float]
    seconds: float


@dataclass
class MemoryTrial:
    task: str
    plan: str
    cache_bytes: int  # one context's sender cache, on average
    bounded: MemoryRun
    unbounded: MemoryRun

    @property
    def ok(self) -> bool:
        b = self.bounded
        return (b.per_sample == self.unbounded.per_sample and b.bound_bytes is not None
                and b.peak_store_bytes <= b.bound_bytes and b.evictions > 0 and b.sender_prefills > b.distinct_contexts)

    def to_dict(self) -> dict:
        out = asdict(self)
        for run in ("bounded", "unbounded"):
            out[run].pop("per_sample")
        return out | {"ok": self.ok, "identical_scores": self.bounded.per_sample == self.unbounded.per_sample}


def measure(family_root: str, task: str, split: str, plan: str, receiver: str, sender: str,
            bound_bytes: int | None, limit: int) -> MemoryRun:
    """One run through lm-eval in this process (call it in a fresh one: its resident memory is the measurement)."""
    from lm_eval import simple_evaluate
    from lm_eval.api.registry import get_model
    from lm_eval.tasks import TaskManager

    from droidspeak.zoo.family import Family
    from droidspeak.zoo.tasks import TASKS

    family = Family.open(family_root)
    include = write_embedded_tasks(family.task_files, family.root / "lm_eval_tasks" / split, split=split)
    r, s = family.load_args(receiver), family.load_args(sender)
    lm = get_model("droidspeak")(receiver=r["path"], receiver_adapter=r["adapter"], sender=s["path"],
                                 sender_adapter=s["adapter"], plan=plan, batch_size=4,
                                 max_cache_gb=4.0 if bound_bytes is None else bound_bytes / 2**30)
    memory = lm.store.tiers[0]
    before, peak = resident_bytes(), [resident_bytes()]
    sender_caches = lm.sender_caches

    def sampled(contexts):  # resident memory sampled at every sender-cache request: where caches come and go
        out = sender_caches(contexts)
        peak[0] = max(peak[0], resident_bytes())
        return out

    lm.sender_caches = sampled
    started = time.perf_counter()
    name, metric = embedded_task_name(task), TASKS[task].metric
    per_sample = []
    for _ in range(2):  # the second pass asks for every context again: a bounded tier must prefill evicted ones anew
        out = simple_evaluate(
            model=lm,
            tasks=[name],
            task_manager=TaskManager(include_path=str(include), include_defaults=False),
            limit=limit,
            log_samples=True,
            verbosity="WARNING",
            random_seed=0,
            numpy_random_seed=0,
            torch_random_seed=0,
            fewshot_random_seed=0,
        )
        per_sample += [
            float(sample[metric]) for sample in sorted(out["samples"][name], key=lambda sample: sample["doc_id"])
        ]
    return MemoryRun(
        bound_bytes=bound_bytes,
        peak_store_bytes=memory.peak_bytes,
        evictions=memory.evictions,
        sender_prefills=lm.stats["sender_prefills"],
        distinct_contexts=len(lm.shared_contexts()),
        rss_growth_bytes=peak[0] - before,
        quality=out["results"][name][f"{metric},none"],
        per_sample=per_sample,
        seconds=time.perf_counter() - started,
    )


def _in_fresh_process(*args) -> MemoryRun:
    code = ("import json, sys; from dataclasses import asdict; from droidspeak.robustness.memory_bound import measure; "
            "print('MEMORY-RUN ' + json.dumps(asdict(measure(*json.loads(sys.argv[1])))))")
    done = subprocess.run([sys.executable, "-c", code, json.dumps(args)], capture_output=True, text=True, timeout=900)
    line = next((out for out in done.stdout.splitlines() if out.startswith("MEMORY-RUN ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"memory run failed:\n{done.stderr[-3000:]}")
    return MemoryRun(**json.loads(line.removeprefix("MEMORY-RUN ")))


def memory_trial(
    family,
    *,
    task: str = "mdqa",
    split: str = "train",
    plan: str = "recompute:2-3",
    receiver: str = "ft-mdqa",
    sender: str = "base",
    contexts_held: float = 2.5,
    limit: int = 128,
) -> MemoryTrial:
    """Bound the memory tier to ``contexts_held`` average sender caches, over ``limit`` questions of ``split``;
    each run in a fresh process, so that its resident memory is its own."""
    args = (str(family.root), task, split, plan, receiver, sender)
    unbounded = _in_fresh_process(*args, None, limit)
    cache_bytes = unbounded.peak_store_bytes // max(1, unbounded.distinct_contexts)
    bounded = _in_fresh_process(*args, int(contexts_held * cache_bytes), limit)
    return MemoryTrial(task, plan, cache_bytes, bounded, unbounded)
