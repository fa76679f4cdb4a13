"""The layers of docs/design.md hold: every import in src/loa points down, never up or across."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import REPO

SRC = REPO / "src"
# the picture in docs/design.md, bottom (0) to top (4); a package not named here fails the test
LAYERS: dict[str, int] = {
    "loa": 0,  # loa/__init__.py: the version
    "loa.errors": 0,
    "loa.message": 0,
    "loa.fallback": 0,
    "loa.sms": 0,
    "loa.phone": 0,
    "loa.settings": 0,
    "loa.log": 0,
    "loa.adapters": 1,
    "loa.engine": 2,
    "loa.campaigns": 3,
    "loa.access": 3,
    "loa.cap": 3,
    "loa.appointments": 3,
    "loa.inbox": 3,
    "loa.followups": 3,
    "loa.ops": 3,
    "loa.privacy": 3,
    "loa.status": 3,
    "loa.api": 4,
    "loa.cli": 4,
    "loa.demo": 4,
    "loa.sim": 4,
    "loa.testing": 4,
}
# within one layer, packages of the same layer may use each other only where they are listed
ACROSS: set[tuple[str, str]] = {
    ("loa.campaigns", "loa.access"),
    ("loa.cap", "loa.campaigns"),
    ("loa.cap", "loa.access"),
    ("loa.appointments", "loa.campaigns"),
    ("loa.appointments", "loa.access"),
    ("loa.inbox", "loa.campaigns"),
    ("loa.inbox", "loa.access"),
    ("loa.inbox", "loa.appointments"),
    ("loa.followups", "loa.campaigns"),
    ("loa.followups", "loa.access"),
    ("loa.followups", "loa.inbox"),
    ("loa.ops", "loa.campaigns"),
    ("loa.privacy", "loa.campaigns"),
    ("loa.privacy", "loa.inbox"),
    ("loa.privacy", "loa.appointments"),
    ("loa.privacy", "loa.access"),
    ("loa.privacy", "loa.followups"),
    ("loa.status", "loa.campaigns"),
    ("loa.demo", "loa.sim"),
    ("loa.demo", "loa.api"),
    ("loa.cli", "loa.api"),
    ("loa.cli", "loa.sim"),
    ("loa.cli", "loa.demo"),
    ("loa.api", "loa.cli"),
    ("loa.sim", "loa.cli"),
}


def home(module: str) -> str:
    """The most specific entry of LAYERS that holds `module`."""
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        name = ".".join(parts[:end])
        if name in LAYERS:
            return name
    raise AssertionError(f"{module} is in no layer: add its package to LAYERS and the design")


def modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path


def imports(path: Path) -> Iterator[tuple[int, str]]:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module


def test_every_import_points_down() -> None:
    wrong = []
    for module, path in modules():
        mine = home(module)
        for line, name in imports(path):
            if name != "loa" and not name.startswith("loa."):
                continue
            theirs = home(name)
            if theirs == mine or theirs == "loa":
                continue
            up = LAYERS[theirs] > LAYERS[mine]
            across = LAYERS[theirs] == LAYERS[mine] > 0 and (mine, theirs) not in ACROSS
            if up or across:
                wrong.append(f"{path.relative_to(REPO)}:{line}: {mine} imports {name}")
    assert wrong == [], "\n".join(wrong)


@pytest.mark.parametrize("package", ["loa.adapters", "loa.engine", "loa.campaigns"])
def test_the_shipped_layers_import_no_test_tools(package: str) -> None:
    found = [
        f"{path.relative_to(REPO)}:{line}"
        for module, path in modules()
        if home(module) == package or module.startswith(package + ".")
        for line, name in imports(path)
        if name.split(".")[0] in ("pytest", "hypothesis", "anyio")
    ]
    assert found == []


def test_the_design_shows_these_layers() -> None:
    design = (REPO / "docs" / "design.md").read_text(encoding="utf-8")
    for package in LAYERS:
        if package != "loa":
            assert f"`{package.removeprefix('loa.')}`" in design, package
