"""constraints.txt pins every package `make` and the image install, consistently with pyproject.toml.

A pin that pyproject.toml's own range refuses would make pip fail to resolve on a fresh machine; a package with
no pin, direct or pulled in by another, would install whatever PyPI holds that day, which is what the file is
there to prevent.
"""
from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
CONSTRAINTS = ROOT / "constraints.txt"
PYPROJECT = ROOT / "pyproject.toml"


def _pins() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for number, raw in enumerate(CONSTRAINTS.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)", line)
        assert match, f"constraints.txt:{number}: not a `name==version` pin: {line!r}"
        name = canonicalize_name(match[1])
        assert name not in pins, f"constraints.txt:{number}: {name} pinned twice"
        pins[name] = Version(match[2])
    return pins


def _project() -> dict:
    return tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]


def _requirements() -> list[Requirement]:
    project = _project()
    listed = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        listed.extend(extra)
    return [Requirement(text) for text in listed]


def test_every_requirement_is_pinned_within_its_range():
    pins = _pins()
    assert canonicalize_name(_project()["name"]) not in pins, \
        "the project itself is pinned: regenerate with `make lock`"
    for requirement in _requirements():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} has no pin in constraints.txt: run `make lock`"
        assert requirement.specifier.contains(pins[name], prereleases=True), \
            f"constraints.txt pins {name}=={pins[name]}, outside pyproject.toml's {requirement}"


def _installed_closure() -> dict[str, Version]:
    """Every distribution the project's requirements (extras included) pull in, with its installed version."""
    found: dict[str, Version] = {}
    todo = [(requirement, frozenset(requirement.extras)) for requirement in _requirements()]
    done: set[tuple[str, frozenset]] = set()
    while todo:
        requirement, extras = todo.pop()
        name = canonicalize_name(requirement.name)
        if (name, extras) in done:
            continue
        done.add((name, extras))
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            pytest.fail(f"{requirement} is required but not installed: reinstall with `make`")
        found[name] = Version(dist.version)
        for text in dist.requires or []:
            child = Requirement(text)
            wanted = child.marker is None or any(child.marker.evaluate({"extra": extra})
                                                 for extra in extras | {""})
            if wanted:
                todo.append((child, frozenset(child.extras)))
    return found


def test_every_installed_dependency_is_pinned_at_its_installed_version():
    pins = _pins()
    for name, version in sorted(_installed_closure().items()):
        assert name in pins, f"{name} (pulled in by a requirement) has no pin in constraints.txt: run `make lock`"
        assert pins[name] == version, f"{name} {version} is installed, constraints.txt pins {pins[name]}"


@pytest.mark.parametrize("path", ["Makefile", "deploy/Dockerfile"])
def test_installs_go_through_the_constraints(path):
    text = (ROOT / path).read_text(encoding="utf-8")
    installs = [line for line in text.replace("\\\n", " ").splitlines()
                if re.search(r"pip install\b", line) and "--no-deps" not in line and "LOCK_VENV" not in line]
    assert installs, f"{path} installs nothing"
    for line in installs:
        assert re.search(r"(^|\s)-c\s+constraints\.txt(\s|$)", line), f"{path}: an install ignores the pins: {line}"
