"""The shared tail of every benchmark script: skip cleanly without CUDA, print the table, end on one JSON line."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import torch


def execute(name: str, cfg, run: Callable, markdown: Callable[[dict], str], *, markdown_path: Path | None = None,
            json_path: Path | None = None) -> dict:
    """Run ``run(cfg)`` (progress to stderr), print its markdown table, optionally save both, print the JSON last."""
    if cfg.device == "cuda" and not torch.cuda.is_available():
        result = {"bench": name, "skipped": "no CUDA device: the 8B-shaped benchmark needs a GPU (try --tiny)"}
        print(result["skipped"], file=sys.stderr)
        print(json.dumps(result))
        return result
    result = run(cfg, log=lambda line: print(line, file=sys.stderr, flush=True))
    table = markdown(result)
    print(table)
    if markdown_path:
        markdown_path.write_text(table)
    if json_path:
        json_path.write_text(json.dumps(result, indent=1))
    print(json.dumps(result))
    return result
