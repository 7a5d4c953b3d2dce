"""The layout explains itself: no two modules share a name, and every package's docstring lists what it holds."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "droidspeak"


def _modules() -> list[Path]:
    return sorted(path for path in PACKAGE.rglob("*.py") if path.name != "__init__.py")


def test_no_two_modules_share_a_base_name():
    where = defaultdict(list)
    for path in _modules():
        where[path.stem].append(str(path.relative_to(PACKAGE)))
    for package in (path.parent for path in PACKAGE.rglob("__init__.py") if path.parent != PACKAGE):
        where[package.name].append(str(package.relative_to(PACKAGE)) + "/")
    shared = {name: places for name, places in where.items() if len(places) > 1}
    assert not shared, f"modules (or a module and a package) share a name: {shared}"


def test_every_package_docstring_names_each_of_its_modules():
    for init in sorted(PACKAGE.rglob("__init__.py")):
        docstring = ast.get_docstring(ast.parse(init.read_text())) or ""
        held = [path.stem for path in sorted(init.parent.glob("*.py")) if path.name != "__init__.py"]
        held += [sub.name for sub in sorted(init.parent.iterdir()) if (sub / "__init__.py").exists()]
        missing = [name for name in held if f"``{name}``" not in docstring]
        assert not missing, f"{init.relative_to(PACKAGE.parent)}'s docstring does not list {missing}"
