"""``droidspeak-eval --use_cache``: a cache written for one plan, sender or adapter never answers another run."""

from __future__ import annotations

import os

from droidspeak.lmeval.cli import keyed_cache_path


def test_cache_path_differs_by_everything_that_changes_an_answer(tmp_path):
    receiver, sender = tmp_path / "receiver", tmp_path / "sender"
    for folder in (receiver, sender):
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"w")
    args = {"receiver": str(receiver), "sender": str(sender), "plan": "recompute:0-1"}
    key = keyed_cache_path("cache/run", args)
    assert key.startswith("cache/run-droidspeak-") and key == keyed_cache_path("cache/run", dict(args))
    others = [{**args, "plan": "recompute:0-3"}, {**args, "sender": str(receiver)},
              {**args, "receiver_adapter": str(sender)}, {**args, "dtype": "bfloat16"}]
    assert len({key, *(keyed_cache_path("cache/run", a) for a in others)}) == 5
    os.utime(sender / "model.safetensors", ns=(1, 1))  # the sender's weights were rewritten in place
    assert keyed_cache_path("cache/run", args) != key
