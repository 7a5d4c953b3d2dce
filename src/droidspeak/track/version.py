"""The engine's code version: what a results row was computed by, so a resumed sweep never mixes code versions.

A git sha changes with every README edit and is unknown in a pip install; this is the sha256 of the source files
that can change a row's numbers (the whole package except ``figures/`` and ``track/``, which only draw and store
rows), prefixed by the package version: ``0.1.0+3f9a1c2b7d4e``.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
NOT_ENGINE = ("figures", "track")  # readers and writers of rows, not what computes them


@lru_cache(maxsize=1)
def code_version() -> str:
    digest = hashlib.sha256()
    for path in sorted(PACKAGE_ROOT.rglob("*.py")):
        relative = path.relative_to(PACKAGE_ROOT)
        if relative.parts[0] in NOT_ENGINE:
            continue
        digest.update(relative.as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    try:
        release = version("droidspeak")
    except PackageNotFoundError:
        release = "0+unknown"
    return f"{release}+{digest.hexdigest()[:12]}"
