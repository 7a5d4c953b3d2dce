"""The shared command line and tail of every benchmark script: ``key=value`` arguments (the entry points' one style),
skip cleanly without CUDA, record as measured, print the table, end on one JSON line.

With ``results_path`` every record a benchmark measures is appended to that JSONL file the moment it exists
(locked and fsynced: several processes, e.g. one per context length, may share the file), so a run killed by a
timeout or a CUDA fault keeps what it measured; ``render`` rebuilds the table from such a file, measuring nothing.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from droidspeak.track.results import append_row, read_rows

OUTPUTS = {  # what every benchmark script takes besides its config's fields
    "tiny": "true: a tiny model on CPU, a smoke run that checks the numbers appear",
    "markdown": "also write the table to this file",
    "json": "also write the full result to this file",
    "results": "append every record to this JSONL file as it is measured",
    "render": "measure nothing: build the table from a results= file",
}


def _value(text: str, default):
    """``text`` as the type of the config field whose default is ``default`` (tuples: comma-separated)."""
    if isinstance(default, bool):
        if text.lower() not in ("true", "false"):
            raise ValueError(f"expected true or false, not {text!r}")
        return text.lower() == "true"
    if isinstance(default, tuple):
        kind = type(default[0]) if default else str
        if kind is tuple:
            raise ValueError("not settable from the command line")
        return tuple(kind(item) for item in text.split(",") if item)
    return type(default)(text) if default is not None else text


def parse(argv: list[str], config_cls, tiny: dict) -> tuple[object, dict]:
    """``key=value`` arguments, the style of every other entry point (these scripts run on a bare GPU machine with
    torch and transformers only, so they parse it themselves): the config (its defaults, or ``tiny``'s with
    ``tiny=true``) and the output options. An unknown key or a bad value exits naming the valid ones."""
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    pairs = {}
    for arg in argv:
        key, sep, text = arg.partition("=")
        if not sep or (key not in fields and key not in OUTPUTS):
            valid = ", ".join([*fields, *OUTPUTS])
            raise SystemExit(f"error: {arg!r} is not key=value with a key of: {valid}")
        pairs[key] = text
    options = {key: pairs.pop(key) for key in list(pairs) if key in OUTPUTS}
    options["tiny"] = _value(options.get("tiny", "false"), False)
    cfg = config_cls(**tiny) if options["tiny"] else config_cls()
    for key, text in pairs.items():
        try:
            setattr(cfg, key, _value(text, getattr(cfg, key)))
        except ValueError as err:
            raise SystemExit(f"error: {key}={text}: {err}") from None
    return cfg, {key: (Path(value) if key != "tiny" else value) for key, value in options.items()}


def main(name: str, config_cls, tiny: dict, run: Callable, assemble: Callable[[list[dict]], dict],
         markdown: Callable[[dict], str], argv: list[str] | None = None) -> dict:
    """The command line every benchmark script shares: its config's fields and the output options as ``key=value``
    (``help`` lists them), or ``render=FILE`` to only rebuild the table from recorded results."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("help", "-h", "--help"):
        print(f"key=value arguments of {name}: " + ", ".join(f.name for f in dataclasses.fields(config_cls)))
        print("\n".join(f"  {key}=...  {what}" for key, what in OUTPUTS.items()))
        return {}
    cfg, options = parse(argv, config_cls, tiny)
    if "render" in options:
        return render(name, options["render"], assemble, markdown, markdown_path=options.get("markdown"),
                      json_path=options.get("json"))
    return execute(name, cfg, run, markdown, markdown_path=options.get("markdown"), json_path=options.get("json"),
                   results_path=options.get("results"))


def execute(name: str, cfg, run: Callable, markdown: Callable[[dict], str], *, markdown_path: Path | None = None,
            json_path: Path | None = None, results_path: Path | None = None) -> dict:
    """Run ``run(cfg)`` (progress to stderr), print its markdown table, optionally save both, print the JSON last."""
    if cfg.device == "cuda" and not torch.cuda.is_available():
        result = {"bench": name, "skipped": "no CUDA device: the 8B-shaped benchmark needs a GPU (try tiny=true)"}
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
