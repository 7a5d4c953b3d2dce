"""The shared tail of every benchmark script: skip cleanly without CUDA, record as measured, print the table, end
on one JSON line.

With ``results_path`` every record a benchmark measures is appended to that JSONL file the moment it exists
(locked and fsynced: several processes, e.g. one per context length, may share the file), so a run killed by a
timeout or a CUDA fault keeps what it measured; ``render`` rebuilds the table from such a file, measuring nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from droidspeak.track.results import append_row, read_rows


def main(name: str, parser: argparse.ArgumentParser, configure: Callable[[argparse.Namespace], object], run: Callable,
         assemble: Callable[[list[dict]], dict], markdown: Callable[[dict], str], argv=None) -> dict:
    """The command line every benchmark script shares: its own flags (``parser``, turned into a config by
    ``configure``) plus where the table, the result and the records go, or ``--render`` to only rebuild the table."""
    parser.add_argument(
        "--tiny", action="store_true", help="tiny model on CPU: a smoke run that checks the numbers appear"
    )
    parser.add_argument("--markdown", type=Path, help="also write the table here")
    parser.add_argument("--json", type=Path, help="also write the full result here")
    parser.add_argument("--results", type=Path, help="append every record to this JSONL file as it is measured")
    parser.add_argument(
        "--render", type=Path, metavar="JSONL", help="measure nothing: build the table from a --results file"
    )
    args = parser.parse_args(argv)
    if args.render:
        return render(name, args.render, assemble, markdown, markdown_path=args.markdown, json_path=args.json)
    return execute(name, configure(args), run, markdown, markdown_path=args.markdown, json_path=args.json,
                   results_path=args.results)


def execute(name: str, cfg, run: Callable, markdown: Callable[[dict], str], *, markdown_path: Path | None = None,
            json_path: Path | None = None, results_path: Path | None = None) -> dict:
    """Run ``run(cfg)`` (progress to stderr), print its markdown table, optionally save both, print the JSON last."""
    if cfg.device == "cuda" and not torch.cuda.is_available():
        result = {"bench": name, "skipped": "no CUDA device: the 8B-shaped benchmark needs a GPU (try --tiny)"}
        print(result["skipped"], file=sys.stderr)
        print(json.dumps(result))
        return result
    record = (lambda rec: append_row(results_path, {"bench": name, **rec})) if results_path else None
    result = run(cfg, log=lambda line: print(line, file=sys.stderr, flush=True), record=record)
    return _emit(result, markdown, markdown_path, json_path)


def render(name: str, results_path: Path, assemble: Callable[[list[dict]], dict], markdown: Callable[[dict], str], *,
           markdown_path: Path | None = None, json_path: Path | None = None) -> dict:
    """The table and result from the records in ``results_path`` (this benchmark's lines only), measuring nothing."""
    records = [r for r in read_rows(results_path) if r.get("bench") == name]
    return _emit(assemble(records), markdown, markdown_path, json_path)


def _emit(result: dict, markdown: Callable[[dict], str], markdown_path: Path | None, json_path: Path | None) -> dict:
    table = markdown(result)
    print(table)
    if markdown_path:
        markdown_path.write_text(table)
    if json_path:
        json_path.write_text(json.dumps(result, indent=1))
    print(json.dumps(result))
    return result
