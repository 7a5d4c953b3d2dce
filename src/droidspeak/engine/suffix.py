"""A fast query-suffix path: preallocated K/V buffers, fixed shapes, and (on CUDA) one captured CUDA graph.

After a partial prefill the receiver still runs the query suffix (tens of tokens) through all its layers against
the context cache. Through HF eager that costs ~30 launches per layer and a growing DynamicCache (a torch.cat per
layer per call): on an H100/H200 the 64-token suffix over 8K context takes ~27 ms where reading the weights once
takes ~3.5 ms (measured on an H200, torch 2.11, Llama-3-8B shape, bf16). Here the suffix runs the receiver's own
layers against a ``SuffixWorkspace`` — K/V buffers of [batch, kv_heads, C + S, head_dim] per layer, the context in
slots [0, C), the suffix in [C, C + S) — so every call has the same shapes and addresses and can be captured once
and replayed (``torch.cuda.CUDAGraph``).
The pipelined prefill writes the context K/V straight into the workspace (``pipelined_prefill(workspace=...)``).

Attention is the model's own; the only difference from HF's path is where keys sit in the buffer (suffix after
the context capacity, masked per row), which attention does not depend on. On CPU the same code runs eagerly and
matches ``engine.infer.tail_logits`` to float rounding (tested).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import contextmanager

import torch

from droidspeak.engine.arch import kv_shape
from droidspeak.engine.batch import PrefilledBatch, adopt
from droidspeak.engine.loading import LoadedModel
from droidspeak.errors import DroidSpeakError
from droidspeak.hf_compat import cache_arg


class SuffixWorkspace:
    """Preallocated per-layer K/V for one shape bucket: ``batch`` rows, ``capacity`` context slots, ``suffix`` slots."""

    def __init__(self, receiver: LoadedModel, *, batch: int, capacity: int, suffix: int):
        window = getattr(receiver.config, "sliding_window", None)
        if window and "sliding_attention" in receiver.stack.layer_types and capacity + suffix > window:
            raise DroidSpeakError(
                f"the fixed-shape suffix path builds one causal mask for every layer, so it holds at most the sliding "
                f"window ({window} tokens) of this model; {capacity} + {suffix} asked: use engine.infer.tail_logits")
        kv_heads, head_dim = kv_shape(receiver.config)
        self.batch, self.capacity, self.suffix = batch, capacity, suffix
        shape = (batch, kv_heads, capacity + suffix, head_dim)
        make = lambda: torch.zeros(shape, device=receiver.device, dtype=receiver.dtype)  # noqa: E731  (finite: masked slots must not hold NaN)
        self.keys = [make() for _ in range(receiver.stack.num_layers)]
        self.values = [make() for _ in range(receiver.stack.num_layers)]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.keys + self.values)

    def check(self, batch: int, longest: int) -> None:
        if batch != self.batch or longest > self.capacity:
            raise DroidSpeakError(
                f"workspace holds {self.batch} rows of up to {self.capacity} context tokens; "
                f"got {batch} rows of up to {longest}: use a workspace of a larger bucket"
            )

    def context_kv(self, layer: int, longest: int, zero_from: Sequence[int] = ()) -> tuple[torch.Tensor, torch.Tensor]:
        """Views of layer's context slots [0, longest); each row's padding tail is zeroed (as right_pad does)."""
        k, v = self.keys[layer][:, :, :longest], self.values[layer][:, :, :longest]
        for row, length in enumerate(zero_from):
            if length < longest:
                k[row, :, length:].zero_()
                v[row, :, length:].zero_()
        return k, v

    def adopt(self, cache, longest: int, recomputed) -> None:
        """Copy the recomputed layers' K/V into the workspace and make the cache hold workspace views throughout."""
        for layer in sorted(recomputed):
            k, v = self.context_kv(layer, longest)
            k.copy_(cache.layers[layer].keys)
            v.copy_(cache.layers[layer].values)
            adopt(cache.layers[layer], k, v)

    def fill(self, prefilled: PrefilledBatch) -> None:
        """Copy an ordinary prefilled cache into the workspace (when the prefill did not write it directly)."""
        longest = prefilled.token_ids.shape[1]
        self.check(prefilled.token_ids.shape[0], longest)
        for layer, cached in enumerate(prefilled.cache.layers):
            k, v = self.context_kv(layer, longest)
            if cached.keys.data_ptr() != k.data_ptr():
                k.copy_(cached.keys)
                v.copy_(cached.values)


class _SlotCache:
    """What the decoder layers see as their cache: the suffix's K/V go to slots [C, C + S); attention reads all."""

    def __init__(self, workspace: SuffixWorkspace):
        self.ws = workspace

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        ws, start = self.ws, self.ws.capacity
        ws.keys[layer_idx][:, :, start : start + ws.suffix].copy_(key_states)
        ws.values[layer_idx][:, :, start : start + ws.suffix].copy_(value_states)
        return ws.keys[layer_idx], ws.values[layer_idx]


@contextmanager
def _sdpa_gqa(enabled: bool):
    """Let HF's sdpa pass ``enable_gqa`` with a mask (no repeat_kv of the whole context), for this call only."""
    name = "TRANSFORMERS_SDPA_FORCE_GQA"
    previous = os.environ.get(name)
    if enabled:
        os.environ[name] = "1"
    try:
        yield
    finally:
        if enabled:
            if previous is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = previous


class SuffixRunner:
    """Logits of each row's last suffix token, from a workspace-backed context; graph-captured on CUDA.

    ``graph``: capture a CUDA graph on the first call (default: on CUDA). A capture that fails (some op in the
    model syncs with the host) falls back to eager and says why in ``mode``. ``gqa_in_sdpa``: see ``_sdpa_gqa``.
    """

    def __init__(self, receiver: LoadedModel, workspace: SuffixWorkspace, *, graph: bool | None = None,
                 gqa_in_sdpa: bool = False):
        self.receiver, self.ws = receiver, workspace
        device = receiver.device
        self.use_graph = (device.type == "cuda") if graph is None else bool(graph and device.type == "cuda")
        self.gqa_in_sdpa = gqa_in_sdpa
        b, c, s = workspace.batch, workspace.capacity, workspace.suffix
        self.ids = torch.zeros(b, s, dtype=torch.long, device=device)
        self.positions = torch.zeros(b, s, dtype=torch.long, device=device)
        self.mask = torch.ones(b, 1, s, c + s, dtype=torch.bool, device=device)
        self.logits: torch.Tensor | None = None
        self._cache = _SlotCache(workspace)
        self._graph = None
        self.mode = "graph" if self.use_graph else "eager"
        self._causal = torch.ones(s, s, dtype=torch.bool, device=device).tril()

    # ---- inputs -------------------------------------------------------------------------------------------
    def set_inputs(self, prefilled: PrefilledBatch, tails: Sequence[torch.Tensor]) -> None:
        """Write ids, positions and mask into the static buffers, with device ops only (no host sync)."""
        self.receiver.check_tails(tails)
        ws, device = self.ws, self.ids.device
        batch, longest = prefilled.token_ids.shape
        ws.check(batch, longest)
        if len(tails) != batch or any(not 0 < t.numel() <= ws.suffix for t in tails):
            raise DroidSpeakError(f"need {batch} tails of 1..{ws.suffix} tokens (the workspace's suffix length)")
        tail_mask = torch.zeros(batch, ws.suffix, dtype=torch.long)
        ids = torch.zeros(batch, ws.suffix, dtype=torch.long)
        for row, tail in enumerate(tails):
            ids[row, ws.suffix - tail.numel() :] = tail.cpu()
            tail_mask[row, ws.suffix - tail.numel() :] = 1
        tail_mask, ids = tail_mask.to(device, non_blocking=True), ids.to(device, non_blocking=True)
        self.ids.copy_(ids)
        lengths = prefilled.attention_mask.sum(-1, keepdim=True)
        self.positions.copy_(lengths + (tail_mask.cumsum(-1) - 1).clamp(min=0))
        context = torch.zeros(batch, ws.capacity, dtype=torch.bool, device=device)
        context[:, :longest] = prefilled.attention_mask.bool()
        self.mask[:, 0, :, : ws.capacity] = context[:, None, :]
        self.mask[:, 0, :, ws.capacity :] = self._causal[None] & tail_mask.bool()[:, None, :]

    # ---- the captured region ------------------------------------------------------------------------------
    def _forward(self) -> None:
        model, stack = self.receiver.model, self.receiver.stack
        hidden = stack.embed(self.ids)
        rope = stack.rope(hidden, self.positions)
        for layer, kind in zip(stack.layers, stack.layer_types):
            hidden = layer(hidden, attention_mask=self.mask, position_embeddings=rope[kind],
                           position_ids=self.positions, use_cache=True, **cache_arg(self._cache))
        last = model.model.norm(hidden[:, -1:])
        logits = model.lm_head(last)[:, -1]
        if self.logits is None:
            self.logits = torch.empty_like(logits)
        self.logits.copy_(logits)

    def _capture(self) -> None:
        """Capture the forward once; on any failure fall back to eager for good, leaving the process usable.

        Warm-up runs with CUDA sync debugging set to "error", so a forward that synchronises with the host (the
        usual reason a capture fails) is found eagerly, before a capture begins. A capture that fails anyway is
        unwound: the current stream restored, the allocator told the capture's pool is done, the pool released.
        """
        device = self.ids.device
        caller = torch.cuda.current_stream(device)
        warm = torch.cuda.Stream(device)
        warm.wait_stream(caller)
        previous_mode = torch.cuda.get_sync_debug_mode()
        try:
            torch.cuda.set_sync_debug_mode("error")
            with torch.cuda.stream(warm):
                for _ in range(2):
                    self._forward()
        except Exception as err:  # noqa: BLE001  (whatever the forward raised, the graph is off)
            return self._give_up(f"forward syncs with the host: {err}", caller)
        finally:
            torch.cuda.set_sync_debug_mode(previous_mode)
        caller.wait_stream(warm)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                self._forward()
        except Exception as err:  # noqa: BLE001
            _unwind_failed_capture(graph, device)
            return self._give_up(f"capture failed: {err}", caller)
        self._graph = graph

    def _give_up(self, why: str, caller) -> None:
        torch.cuda.set_stream(caller)
        torch.cuda.synchronize(self.ids.device)
        self.use_graph, self.mode = False, f"eager ({why.splitlines()[0][:160]})"

    @torch.inference_mode()
    def __call__(self, prefilled: PrefilledBatch, tails: Sequence[torch.Tensor]) -> torch.Tensor:
        """Logits [batch, vocab] of each row's last tail token (a buffer reused by the next call: clone to keep)."""
        self.set_inputs(prefilled, tails)
        with _sdpa_gqa(self.gqa_in_sdpa):
            if self.use_graph and self._graph is None:
                self._capture()
            if self._graph is not None:
                self._graph.replay()
            else:
                self._forward()
        return self.logits


def _unwind_failed_capture(graph: "torch.cuda.CUDAGraph", device: torch.device) -> None:
    """After a capture raised: end the stream capture if still open, and hand the graph's memory pool back.

    ``torch.cuda.graph.__exit__`` ends the capture before it restores the stream; when ending fails, the caching
    allocator may still route this stream's allocations into the graph's pool (the later "captures underway"
    assert). Ending that routing and releasing the pool uses torch's private hooks where this torch has them.
    """
    if torch.cuda.is_current_stream_capturing():
        try:
            graph.capture_end()
        except RuntimeError:
            pass
    pool = graph.pool() if hasattr(graph, "pool") else None
    index = device.index if device.index is not None else torch.cuda.current_device()
    for hook in ("_cuda_endAllocateToPool", "_cuda_releasePool"):
        if pool is not None and hasattr(torch._C, hook):
            try:
                getattr(torch._C, hook)(index, pool)
            except RuntimeError:
                pass
