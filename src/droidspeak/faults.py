"""Fault injection for the robustness campaign: die by SIGKILL at a named point, the Nth time it is reached.

``DROIDSPEAK_FAULT=cache_write:2`` kills the process the second time a cache file has been written but not yet
renamed into place. The points sit where a crash is most harmful: ``cache_write`` (engine/cache.py), ``result_append``
(half a results line written: a torn row), ``job_row`` (a multirun job's file written, not renamed),
``wandb_write`` (a W&B run mid-log). Unset, a point costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from collections.abc import Callable

FAULT_ENV = "DROIDSPEAK_FAULT"
POINTS = ("cache_write", "result_append", "job_row", "wandb_write")
_reached: Counter[str] = Counter()


def fault_point(name: str, before_kill: Callable[[], object] | None = None) -> None:
    """SIGKILL this process here if ``DROIDSPEAK_FAULT`` names this point and its count is reached (after
    ``before_kill``, e.g. writing half a line, so the kill leaves what a real crash would)."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    point, _, count = spec.partition(":")
    if point != name:
        return
    _reached[name] += 1
    if _reached[name] == int(count or 1):
        if before_kill is not None:
            before_kill()
        os.kill(os.getpid(), signal.SIGKILL)
