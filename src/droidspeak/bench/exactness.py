"""CUDA exactness, as a plain program: pipelined ≡ unpipelined, graph-captured suffix ≡ eager, and a failed capture
leaves the process usable. The GPU check runs it with no pytest installed
(``python -m droidspeak.bench.exactness [device=cpu]``); the CUDA test calls the same function.

Each check is isolated and reported by name; the capture-failure check runs last, since a broken CUDA context would
spoil whatever follows it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from droidspeak.bench.link import ThrottledTransfer
from droidspeak.engine.infer import tail_logits
from droidspeak.engine.loading import LoadedModel, from_module
from droidspeak.engine.pipeline import STRATEGIES, pipelined_prefill
from droidspeak.engine.prefill import receiver_prefill, sender_prefill
from droidspeak.engine.suffix import SuffixRunner, SuffixWorkspace
from droidspeak.store import host_store

PLANS = ("recompute:2-3", "recompute:0-1+4-4", "full_reuse", "recompute:0-5", "recompute:1-1+3-5")
LENGTHS = (11, 7, 11)  # a right-padded batch of different lengths
TAILS = ((1, 2, 3, 4, 5), (6, 7), (8,))


def tiny(seed: int, device: str) -> LoadedModel:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=97,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=6,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        attn_implementation="sdpa",
    )
    return from_module(LlamaForCausalLM(config).to(device), name=f"tiny-{seed}")


def identical(a, b) -> bool:
    return (torch.equal(a.token_ids, b.token_ids) and torch.equal(a.attention_mask, b.attention_mask)
            and all(torch.equal(x.keys, y.keys) and torch.equal(x.values, y.values)
                    for x, y in zip(a.cache.layers, b.cache.layers)))


class _SyncingRunner(SuffixRunner):
    """A suffix whose forward reads a value back to the host: it must never be captured."""

    def _forward(self) -> None:
        super()._forward()
        float(self.logits[0, 0])


class _FailingCaptureRunner(SuffixRunner):
    """A suffix that runs eagerly but breaks only while being captured (a sync inside the capture)."""

    def _forward(self) -> None:
        super()._forward()
        if self.ids.is_cuda and torch.cuda.is_current_stream_capturing():
            torch.cuda.synchronize()


def run_checks(device: str = "cuda", log: Callable[[str], None] = print) -> dict:
    """Every check's outcome: ``{"passed": bool, "checks": [{"name", "passed", "detail"}]}``."""
    sender, receiver = tiny(0, device), tiny(1, device)
    g = torch.Generator().manual_seed(3)
    contexts = [torch.randint(0, 97, (n,), generator=g) for n in LENGTHS]
    caches = sender_prefill(sender, contexts)
    store = host_store()  # page-locked host memory when CUDA is present
    views = [store.view(store.put(c)) for c in caches]
    tails = [torch.tensor(t) for t in TAILS]
    captured = "graph" if device == "cuda" else "eager"  # no graphs on CPU: the same code runs eagerly
    checks: list[dict] = []

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    def check(name: str, fn: Callable[[], str]) -> None:
        try:
            detail, passed = fn(), True
        except AssertionError as err:
            detail, passed = f"mismatch: {err}", False
        except Exception as err:  # noqa: BLE001  (a crash is a failed check, the others still run)
            detail, passed = f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}", False
        checks.append({"name": name, "passed": passed, "detail": detail})
        log(f"[exactness] {'PASS' if passed else 'FAIL'} {name}: {detail}")

    def pinned() -> str:
        tier = store.name
        assert store.pinned == (device == "cuda"), f"host tier is {tier}"
        return tier

    def pipelined() -> str:
        for plan in PLANS:
            expected = receiver_prefill(receiver, caches, plan)
            for strategy in STRATEGIES:
                got = pipelined_prefill(receiver, views, plan, strategy=strategy)
                sync()
                assert identical(got, expected), f"{plan} {strategy}"
        return f"{len(PLANS)} plans x {len(STRATEGIES)} strategies bit-identical, read from the {store.name}"

    def throttled() -> str:
        expected = receiver_prefill(receiver, caches, "recompute:2-3")
        got = pipelined_prefill(receiver, views, "recompute:2-3", transfer=ThrottledTransfer(0.5, chunk_bytes=256))
        sync()
        assert identical(got, expected), "throttled link"
        return "bit-identical through a 0.5 GB/s emulated link in 256-byte chunks"

    def graph_suffix(runner_class=SuffixRunner, expect_mode=captured) -> Callable[[], str]:
        def run() -> str:
            ws = SuffixWorkspace(receiver, batch=len(caches), capacity=16, suffix=5)
            expected = receiver_prefill(receiver, caches, "recompute:1-2")
            prefilled = pipelined_prefill(receiver, views, "recompute:1-2", workspace=ws)
            runner = runner_class(receiver, ws)
            first = runner(prefilled, tails).clone()
            torch.testing.assert_close(first, tail_logits(receiver, expected, tails)[:, -1], rtol=1e-4, atol=1e-4)
            again = runner(prefilled, tails).clone()  # a second replay, same inputs
            assert torch.equal(again, first), "second replay differs from the first"
            other = [t.flip(0) for t in tails]  # a third replay, new inputs through the same buffers
            torch.testing.assert_close(runner(prefilled, other), tail_logits(receiver, expected, other)[:, -1],
                                       rtol=1e-4, atol=1e-4)
            assert runner.mode.startswith(expect_mode), f"mode {runner.mode!r}, expected {expect_mode!r}"
            return f"mode {runner.mode}; 3 calls match eager"
        return run

    def recovered(runner_class) -> Callable[[], str]:
        def run() -> str:
            detail = graph_suffix(runner_class, expect_mode="eager")()
            after = graph_suffix()()  # the process still captures and replays graphs, and runs everything eagerly
            return f"{detail}; afterwards {after}"
        return run

    check("host store is pinned", pinned)
    check("pipelined == unpipelined", pipelined)
    check("throttled link stays exact", throttled)
    check("graph-captured suffix == eager", graph_suffix())
    check("a syncing forward is never captured", recovered(_SyncingRunner))
    check("a failed capture falls back to eager", recovered(_FailingCaptureRunner))
    return {"passed": all(c["passed"] for c in checks), "checks": checks}


def main(argv: list[str] | None = None) -> int:
    """``device=cuda`` (the default) or ``device=cpu`` (a smoke run of the checks): key=value, as every entry point."""
    argv = sys.argv[1:] if argv is None else argv
    device = "cuda"
    for arg in argv:
        key, sep, value = arg.partition("=")
        if key != "device" or not sep or value not in ("cuda", "cpu"):
            raise SystemExit(f"error: {arg!r}: the one argument is device=cuda or device=cpu")
        device = value
    if device == "cuda" and not torch.cuda.is_available():
        print(json.dumps({"passed": False, "skipped": "no CUDA device"}))
        return 2
    result = run_checks(device, log=lambda line: print(line, file=sys.stderr, flush=True))
    print(json.dumps(result))
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
