"""Emulated slower links (the paper's Fig. 20): copies split into contiguous chunks (whole rows within each head of a
K/V slice, so every chunk is one flat copy from pinned memory), each padded to the chunk's time at the
target bandwidth. On CUDA the padding is a device-side sleep on the copy stream, so the host never waits and the
pipeline's stream ordering is what it would be on a real link; on CPU it is a host sleep."""

from __future__ import annotations

import time

import torch

from droidspeak.engine.pipeline import Transfer, contiguous_blocks

_CYCLES_PER_MS: dict[int, float] = {}


def cycles_per_ms(device: torch.device) -> float:
    """Calibrate ``torch.cuda._sleep`` (it spins for a number of clock cycles) once per device."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _CYCLES_PER_MS:
        cycles = 10_000_000
        torch.cuda._sleep(cycles)  # warm
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        torch.cuda._sleep(cycles)
        end.record()
        end.synchronize()
        _CYCLES_PER_MS[index] = cycles / start.elapsed_time(end)
    return _CYCLES_PER_MS[index]


class ThrottledTransfer(Transfer):
    """Copies at about ``gbps`` GB/s (None: as fast as the hardware goes), in chunks of ``chunk_bytes``."""

    def __init__(self, gbps: float | None, *, chunk_bytes: int = 8 << 20, native_gbps: float = 0.0):
        self.gbps, self.chunk_bytes = gbps, chunk_bytes
        self.native_gbps = native_gbps  # the hardware's own rate: its share of each chunk's time is not padded
        self.bytes_copied = 0

    def _pad_ms(self, nbytes: int) -> float:
        target = nbytes / (self.gbps * 1e9) * 1e3
        native = nbytes / (self.native_gbps * 1e9) * 1e3 if self.native_gbps else 0.0
        return max(0.0, target - native)

    def copy(self, dst: torch.Tensor, src: torch.Tensor) -> None:
        self.bytes_copied += src.numel() * src.element_size()
        if self.gbps is None:
            return super().copy(dst, src)
        for d_block, s_block in contiguous_blocks(dst, src):  # e.g. one head of [kv_heads, T, head_dim]
            rows = d_block.shape[0] if d_block.dim() else 1
            row_bytes = max(1, s_block.numel() // max(1, rows) * s_block.element_size())
            step = max(1, self.chunk_bytes // row_bytes)
            for begin in range(0, rows, step):  # chunks of whole rows: contiguous (and pinned) like their block
                d = d_block.narrow(0, begin, min(step, rows - begin)) if d_block.dim() else d_block
                s = s_block.narrow(0, begin, min(step, rows - begin)) if s_block.dim() else s_block
                d.copy_(s, non_blocking=True)
                pad = self._pad_ms(s.numel() * s.element_size())
                if pad <= 0:
                    continue
                if dst.is_cuda:
                    torch.cuda._sleep(int(pad * cycles_per_ms(dst.device)))
                else:
                    time.sleep(pad / 1e3)
