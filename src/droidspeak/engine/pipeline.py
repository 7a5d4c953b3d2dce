"""Pipelined receiver prefill: E first, recompute while the reused layers' K/V stream in (the paper's Fig. 13).

Same inputs and result as ``engine.prefill.receiver_prefill`` — a PrefilledBatch holding a transformers
DynamicCache — but the sender's cache may live anywhere (a ContextCache in host pinned memory, or a
``StoredCache`` view of any store tier, read one layer at a time), and on CUDA the transfers overlap compute:

    side stream:    E[s1] E[s2] ─ev─▶ K/V[l] K/V[l'] ... ─ev─▶
    compute stream:            wait(E) group 1, group 2 ...   wait(K/V) ▶ ready

Ordering is by CUDA events only: inside the layer loop nothing waits on the host, so a slow source (disk,
remote) is read while the GPU is already busy with the recompute kernels the host queued first. Strategies:
``pipelined`` (E first, as above), ``load_reused`` (load E and the reused K/V, then compute) and ``load_all``
(load every layer's K/V, recomputed ones too, then compute) — the three timelines of Fig. 13. On CPU there are no
streams: every strategy runs the same exact sequence and gives bit-identical results to receiver_prefill.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

from droidspeak.engine.arch import kv_shape
from droidspeak.engine.batch import PrefilledBatch, adopt, check_fits, context_cache, cost_of, kv_tokens
from droidspeak.engine.cache import ContextCache
from droidspeak.engine.loading import LoadedModel
from droidspeak.engine.plan import RecomputePlan, layer_groups, parse_plan
from droidspeak.engine.prefill import receiver_prefill
from droidspeak.errors import DroidSpeakError

STRATEGIES = ("pipelined", "load_reused", "load_all")


def contiguous_blocks(dst: torch.Tensor, src: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(dst, src)`` views, split along leading dims until both sides are contiguous: one flat DMA copy each.

    A context's K/V slice ``[kv_heads, T, head_dim]`` of a right-padded or workspace buffer is contiguous per head
    only; copying it whole would stage it through a temporary on the device.
    """
    if dst.dim() == 0 or (dst.is_contiguous() and src.is_contiguous()):
        yield dst, src
        return
    for d, s in zip(dst.unbind(0), src.unbind(0)):
        yield from contiguous_blocks(d, s)


class Transfer:
    """How bytes reach the device: asynchronous copies of contiguous blocks (a rate-limited link subclasses this)."""

    def copy(self, dst: torch.Tensor, src: torch.Tensor) -> None:
        for d, s in contiguous_blocks(dst, src):
            d.copy_(s, non_blocking=True)


@dataclass
class Source:
    """One context's sender cache as the pipeline reads it: token ids, shape facts, and per-layer getters."""

    token_ids: torch.Tensor
    sender: str
    num_layers: int
    kv_heads: int
    head_dim: int
    hidden_size: int | None
    hidden_layers: tuple[int, ...]
    held_from: tuple[int, ...]  # per layer, the first position whose K/V are held (a sliding layer's window)
    kv: object  # layer -> (K, V), each [kv_heads, T - held_from[layer], head_dim]
    hidden: object  # layer -> E[layer], [T, hidden]

    @property
    def num_tokens(self) -> int:
        return int(self.token_ids.numel())

    @classmethod
    def of(cls, context) -> "Source":
        if isinstance(context, Source):
            return context
        if isinstance(context, ContextCache):
            return cls(context.token_ids, context.sender, context.num_layers, context.kv_heads, context.head_dim,
                       context.hidden_size, context.hidden_layers, context.held_from,
                       lambda layer: (context.keys[layer], context.values[layer]), lambda layer: context.hidden[layer])
        if hasattr(context, "info") and hasattr(context, "kv"):  # store.StoredCache: fetched layer by layer
            info = context.info
            return cls(context.token_ids, info.sender, info.num_layers, info.kv_heads, info.head_dim, info.hidden_size,
                       tuple(info.hidden_layers), info.held_from, context.kv, context.hidden)
        raise DroidSpeakError(
            f"cannot prefill from a {type(context).__name__}: "
            "pass ContextCache objects or store views (store.view(key))"
        )


@dataclass
class PipelineTrace:
    """CUDA events (or host timestamps on CPU) marking the phases of one prefill, for the benchmarks."""

    events: dict[str, object] = field(default_factory=dict)

    def mark(self, name: str, stream=None) -> None:
        if stream is not None:
            event = torch.cuda.Event(enable_timing=True)
            event.record(stream)
            self.events[name] = event
        else:
            import time

            self.events[name] = time.perf_counter()

    def elapsed_ms(self, start: str, end: str) -> float:
        """Call after the work is done (synchronise the device first)."""
        a, b = self.events[start], self.events[end]
        return a.elapsed_time(b) if hasattr(a, "elapsed_time") else (b - a) * 1e3


@torch.inference_mode()
def pipelined_prefill(
    receiver: LoadedModel,
    contexts: Sequence,
    plan: str | RecomputePlan,
    *,
    strategy: str = "pipelined",
    transfer: Transfer | None = None,
    copy_stream: "torch.cuda.Stream | None" = None,
    workspace=None,
    trace: PipelineTrace | None = None,
) -> PrefilledBatch:
    """Receiver cache over ``contexts`` (ContextCache or store views) for ``plan``; see the module docstring.

    ``workspace`` (an ``engine.suffix.SuffixWorkspace``) makes the context K/V land in its preallocated buffers,
    so a graph-captured suffix can run on them without a copy. Returns when the work is queued: on CUDA the
    result is ready in stream order on the current stream (synchronise before reading it from the host).
    """
    if strategy not in STRATEGIES:
        raise DroidSpeakError(f"unknown strategy {strategy!r}: choose one of {STRATEGIES}")
    receiver = receiver.context_model  # an activated LoRA's contexts are its base's
    stack = receiver.stack
    plan = parse_plan(plan, stack.num_layers)
    if not contexts:
        raise DroidSpeakError("pipelined_prefill needs at least one context")
    if not plan.uses_cache:
        ids = [c.token_ids if hasattr(c, "token_ids") else c for c in contexts]
        return receiver_prefill(receiver, ids, plan)
    groups = layer_groups(plan, stack.num_layers)
    sources = [Source.of(c) for c in contexts]
    for source in sources:
        check_fits(receiver, source, plan)
    transfer = transfer or Transfer()
    device, dtype = receiver.device, receiver.dtype
    cuda = device.type == "cuda"
    compute = torch.cuda.current_stream(device) if cuda else None
    side = (copy_stream or torch.cuda.Stream(device)) if cuda else None

    # ---- host-side bookkeeping, all before any device work ---------------------------------------------
    lengths = [s.num_tokens for s in sources]
    batch, longest = len(sources), max(lengths)
    padded = len(set(lengths)) > 1
    ids_cpu = torch.zeros(batch, longest, dtype=torch.long)
    mask_cpu = torch.zeros(batch, longest, dtype=torch.long)
    for row, source in enumerate(sources):
        ids_cpu[row, : lengths[row]] = source.token_ids
        mask_cpu[row, : lengths[row]] = 1
    recomputed = set(plan.recomputed_layers)
    reused = [layer for layer in range(stack.num_layers) if layer not in recomputed]
    loaded = list(range(stack.num_layers)) if strategy == "load_all" else reused
    config = receiver.config
    kv_heads, head_dim = kv_shape(config)

    # ---- destinations, allocated on the compute stream ------------------------------------------------
    trace and trace.mark("start", compute)
    ids, mask = ids_cpu.to(device, non_blocking=True), mask_cpu.to(device, non_blocking=True)
    e_bufs = {
        s: torch.zeros(batch, longest, config.hidden_size, device=device, dtype=dtype) for s, _ in groups if s > 0
    }
    if workspace is not None:
        workspace.check(batch, longest)
        kv_bufs = {layer: workspace.context_kv(layer, longest, zero_from=lengths) for layer in loaded}
    else:
        shape = (batch, kv_heads, longest, head_dim)
        kv_bufs = {
            layer: (torch.zeros(shape, device=device, dtype=dtype), torch.zeros(shape, device=device, dtype=dtype))
            for layer in loaded
        }
    cache = context_cache([(None, None)] * stack.num_layers)  # one empty layer each
    for layer in reused:
        adopt(cache.layers[layer], *kv_bufs[layer])

    def copy_e() -> dict[int, object]:
        ready = {}
        for s, buf in e_bufs.items():
            for row, source in enumerate(sources):
                transfer.copy(buf[row, : lengths[row]], source.hidden(s))
            ready[s] = side.record_event() if cuda else None
        return ready

    def copy_kv() -> None:
        for layer in loaded:
            k_buf, v_buf = kv_bufs[layer]
            for row, source in enumerate(sources):
                k, v = source.kv(layer)
                start = source.held_from[layer]  # a sliding layer's window: the slots before it stay zero
                if start and workspace is not None:
                    k_buf[row, :, :start].zero_()
                    v_buf[row, :, :start].zero_()
                transfer.copy(k_buf[row, :, start : lengths[row]], k)
                transfer.copy(v_buf[row, :, start : lengths[row]], v)

    def compute_groups(e_ready: dict[int, object]) -> None:
        positions = torch.arange(longest, device=device).unsqueeze(0).expand(batch, -1)
        attention_mask = mask if padded else None  # all ones: the model builds the same (causal) mask from None
        for start, end in groups:
            if cuda and start > 0:
                compute.wait_event(e_ready[start])
            hidden = stack.embed(ids) if start == 0 else e_bufs[start]
            stack.run_layers(hidden, start, end, attention_mask=attention_mask, position_ids=positions, cache=cache)

    # ---- the three timelines ----------------------------------------------------------------------------
    if cuda:
        side.wait_stream(compute)  # destinations exist before the side stream writes them
        with torch.cuda.stream(side):
            e_ready = copy_e()
            trace and trace.mark("e_loaded", side)
            if strategy != "pipelined":
                copy_kv()
                trace and trace.mark("kv_loaded", side)
        if strategy != "pipelined":
            compute.wait_stream(side)
        compute_groups(e_ready)  # queued on the compute stream; the host moves on at once
        trace and trace.mark("computed", compute)
        if strategy == "pipelined":
            with torch.cuda.stream(side):
                copy_kv()  # host reads (disk, remote) overlap the GPU's recompute
                trace and trace.mark("kv_loaded", side)
            compute.wait_stream(side)
    else:
        e_ready = copy_e()
        trace and trace.mark("e_loaded")
        if strategy != "pipelined":
            copy_kv()
            trace and trace.mark("kv_loaded")
        compute_groups(e_ready)
        trace and trace.mark("computed")
        if strategy == "pipelined":
            copy_kv()
            trace and trace.mark("kv_loaded")
    if workspace is not None:
        workspace.adopt(cache, longest, recomputed)
    trace and trace.mark("end", compute)
    return PrefilledBatch(cache, ids, mask, cost_of(receiver, plan, sum(lengths), kv_tokens=kv_tokens(sources)))
