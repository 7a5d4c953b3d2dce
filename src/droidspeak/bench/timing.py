"""Time device work properly: warm up, bracket each repeat with CUDA events (host clock on CPU), take the median."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


def synchronize(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class Timing:
    median_ms: float
    samples_ms: tuple[float, ...]


def measure(fn: Callable[[], object], *, device: torch.device | str = "cpu", warmup: int = 2, repeats: int = 5,
            setup: Callable[[], object] | None = None) -> Timing:
    """Median wall time of ``fn`` in ms; ``setup`` runs before each call, outside the timed region."""
    device = torch.device(device)
    cuda = device.type == "cuda"
    for _ in range(warmup):
        if setup:
            setup()
        fn()
    synchronize(device)
    samples = []
    for _ in range(repeats):
        if setup:
            setup()
            synchronize(device)
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - t0) * 1e3)
    return Timing(statistics.median(samples), tuple(samples))


def environment(device: torch.device | str) -> dict:
    """What a reader needs to compare numbers: card, torch and transformers versions."""
    import transformers

    device = torch.device(device)
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    return {"device": str(device), "card": card, "torch": torch.__version__, "transformers": transformers.__version__,
            "cuda": torch.version.cuda}
