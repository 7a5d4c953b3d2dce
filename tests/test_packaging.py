"""What we declare and what we install agree: the lock's exact versions sit inside pyproject's ranges, and the
torch range admits the GPU machines' 2.11 as well as the CPU build CI installs."""

from __future__ import annotations

from pathlib import Path

import tomllib
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]


def _declared() -> dict[str, Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    return {Requirement(text).name.lower().replace("_", "-"): Requirement(text) for text in requirements}


def _pinned(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.lower().replace("_", "-")] = version
    return pins


def test_the_lock_pins_every_declared_dependency_inside_its_declared_range():
    declared, locked = _declared(), _pinned(REPO / "requirements.lock")
    for name, requirement in declared.items():
        assert name in locked, f"requirements.lock lacks {name}: run make lock"
        assert requirement.specifier.contains(locked[name], prereleases=True), (
            f"requirements.lock pins {name}=={locked[name]} outside pyproject's {requirement}")


def test_the_torch_range_admits_the_gpu_machines_and_the_cpu_build():
    torch = _declared()["torch"].specifier
    assert torch.contains("2.11.0") and torch.contains("2.13.0")
    (cpu_torch,) = _pinned(REPO / "constraints-cpu.txt").values()
    assert torch.contains(cpu_torch) and _pinned(REPO / "requirements.lock")["torch"].startswith(cpu_torch)
