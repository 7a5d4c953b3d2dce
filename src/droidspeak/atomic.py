"""Files written whole or not at all: the writer's own temporary name beside the target, then one rename.

Why: the jobs of a sweep (joblib, SLURM, Ray) write shared files side by side — task YAMLs, caches, job rows,
profiles. A reader must never see a half-written file, and a writer that dies leaves the target as it was.
"""

from __future__ import annotations

import fcntl
import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def replacing(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path of this writer's own (pid and random suffix) that replaces ``path`` when the block ends
    without error; removed otherwise. Hidden and ending in ``.tmp``, so no glob for the real files matches it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str, *, durable: bool = False, before_rename=None) -> Path:
    """Write ``text`` to ``path`` atomically; ``durable`` fsyncs it first; ``before_rename()`` runs just before
    the rename (the robustness campaign's fault point)."""
    with replacing(path) as tmp:
        with open(tmp, "w") as handle:
            handle.write(text)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        if before_rename is not None:
            before_rename()
    return Path(path)


@contextmanager
def exclusive(lock: str | os.PathLike, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold an exclusive lock on the file ``lock`` for the block: jobs that would build the same thing (a family and
    its extensions) run one after the other, and the later one finds it built, instead of wiping the other's
    half-built folder. ``on_wait()`` runs if another job holds it (to say why this one waits). The lock goes with the
    process, so a killed builder leaves nothing to clean up; keep ``lock`` outside anything a builder deletes."""
    lock = Path(lock)
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
