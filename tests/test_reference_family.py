"""The shipped reference family: exported with a sha256 manifest, installed verified, compared by quality."""

from __future__ import annotations

import json

import pytest

from droidspeak.zoo.builder import MARKER
from droidspeak.zoo.family import (
    MANIFEST,
    Family,
    compare_with_reference,
    export_reference,
    install_reference,
)


def fake_family(root, accuracy=0.9):
    """A family folder with the files a real build leaves (weights stand-ins, an adapter, a task split)."""
    (root / "models" / "base").mkdir(parents=True)
    (root / "models" / "base" / "model.safetensors").write_bytes(b"weights" * 100)
    (root / "models" / "lora-a").mkdir()
    (root / "models" / "lora-a" / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(root)}))
    (root / "tasks" / "qa").mkdir(parents=True)
    (root / "tasks" / "qa" / "test.jsonl").write_text('{"id": 1}\n')
    report = {"recipe_hash": "abc", "models": {"base": "models/base", "lora-a": "models/lora-a"},
              "adapters": {"lora-a": "models/base"}, "pairs": [["lora-a<-base", "lora-a", "base", "qa"]],
              "task_files": {"qa": {"test": "tasks/qa/test.jsonl"}}, "own_task": {"base": None, "lora-a": "qa"},
              "accuracy": {"lora-a": {"qa": accuracy}},
              "phenomenon": {"lora-a<-base": {"receiver": accuracy, "sender": 0.1, "full_reuse": 0.5}}}
    (root / "family.json").write_text(json.dumps(report))
    (root / MARKER).write_text("{}\n")
    return Family.open(root)


def test_export_then_install_is_verified_and_relocated(tmp_path):
    built = fake_family(tmp_path / "cache" / "zoo-x")
    reference = export_reference(built, tmp_path / "reference" / "zoo-x")
    manifest = json.loads((reference / MANIFEST).read_text())
    assert set(manifest["files"]) >= {"family.json", "models/base/model.safetensors", MARKER}
    adapter = json.loads((reference / "models" / "lora-a" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == "models/base"  # no machine path in what is committed
    root = tmp_path / "fresh" / "zoo-x"
    install_reference(reference, root)
    installed = Family.open(root)
    assert (root / MARKER).exists() and not (root / MANIFEST).exists()
    assert installed.models["base"].joinpath("model.safetensors").read_bytes() == b"weights" * 100
    adapter = json.loads((root / "models" / "lora-a" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(root / "models" / "base")


def test_a_corrupt_reference_is_refused_and_nothing_is_installed(tmp_path):
    reference = export_reference(fake_family(tmp_path / "cache" / "zoo-x"), tmp_path / "reference" / "zoo-x")
    weights = reference / "models" / "base" / "model.safetensors"
    weights.write_bytes(b"Weights" + weights.read_bytes()[7:])  # one flipped byte
    root = tmp_path / "fresh" / "zoo-x"
    with pytest.raises(RuntimeError, match="1 file\\(s\\) fail their sha256.*model.safetensors"):
        install_reference(reference, root)
    assert not root.exists() and not root.with_name("zoo-x.installing").exists()


def test_a_retrained_family_is_compared_by_quality_not_bytes(tmp_path):
    reference = export_reference(fake_family(tmp_path / "a" / "zoo-x", accuracy=0.9), tmp_path / "reference" / "zoo-x")
    assert compare_with_reference(fake_family(tmp_path / "b" / "zoo-x", accuracy=0.88), reference) == []
    differences = compare_with_reference(fake_family(tmp_path / "c" / "zoo-x", accuracy=0.7), reference)
    assert differences == ["lora-a on qa: 0.7 (reference 0.9)", "lora-a<-base receiver: 0.7 (reference 0.9)"]
