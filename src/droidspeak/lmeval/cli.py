"""``droidspeak-eval``: lm-eval's own CLI, with the ``droidspeak`` backend registered (same flags).

One difference: lm-eval keys ``--use_cache`` entries by the request alone, so a cache written under one plan,
sender or adapter would answer a run with another. For ``--model droidspeak`` the cache path is suffixed with a
digest of what determines an answer (every model_arg, and each local model/adapter folder's weight files by name,
size and modification time), so runs that differ in any of them never share cache entries.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import droidspeak  # noqa: F401  (registers the backend)

IDENTITY_ARGS = ("receiver", "sender", "receiver_adapter", "sender_adapter")


def _files_identity(reference: str) -> list:
    folder = Path(reference)
    if not folder.is_dir():
        return [reference]  # a hub id (with its revision in model_args, if any)
    files = sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin", ".json"))
    return [reference] + [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files]


def keyed_cache_path(path: str, model_args: dict | None) -> str:
    """``path`` + a digest of the answer-determining model_args (see the module docstring)."""
    args = {k: str(v) for k, v in (model_args or {}).items()}
    identity = {"args": args, "files": {k: _files_identity(args[k]) for k in IDENTITY_ARGS if args.get(k)}}
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    return f"{path}-droidspeak-{digest}"


def main() -> None:
    from lm_eval._cli import HarnessCLI
    from lm_eval.utils import setup_logging

    setup_logging()
    parser = HarnessCLI()
    args = parser.parse_args()
    if getattr(args, "model", None) == "droidspeak" and getattr(args, "use_cache", None):
        args.use_cache = keyed_cache_path(args.use_cache, args.model_args)
    parser.execute(args)


if __name__ == "__main__":
    main()
