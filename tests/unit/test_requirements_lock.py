"""requirements-production.txt is the lock of pyproject's runtime dependencies (`make lock`):
every dependency pinned with a version its specifier allows, nothing missing, nothing stale,
no extra package indexes."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements-production.txt"
PROJECT = "conduit-api"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)\s*(?:;.*)?$")
# The lock is compiled for this interpreter version (`--python-version 3.11` in the Makefile).
TARGET: dict[str, str] = {
    **{key: str(value) for key, value in default_environment().items()},
    "python_version": "3.11",
    "python_full_version": "3.11.0",
}


def runtime_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(line) for line in project["dependencies"]]


def applies(requirement: Requirement, extra: str = "") -> bool:
    if requirement.marker is None:
        return True
    return requirement.marker.evaluate({**TARGET, "extra": extra})


def lock_lines() -> list[str]:
    return LOCK.read_text().splitlines()


def pins() -> dict[str, Version]:
    found: dict[str, Version] = {}
    for line in lock_lines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = PIN.match(line.strip())
        assert match, f"not an exact pin: {line!r}"
        name = canonicalize_name(match.group(1))
        assert name not in found, f"{name} pinned twice"
        found[name] = Version(match.group(2))
    return found


def via(name: str) -> list[str]:
    """The `# via` parents uv wrote under the pin of `name`."""
    lines = lock_lines()
    for index, line in enumerate(lines):
        match = PIN.match(line.strip())
        if match and canonicalize_name(match.group(1)) == name:
            parents: list[str] = []
            for follow in lines[index + 1 :]:
                if not follow.startswith("    #"):
                    break
                text = follow.strip("# ").removeprefix("via").strip()
                if text:
                    parents.append(text)
            return parents
    return []


def closure() -> set[str]:
    """Runtime dependencies and, through installed metadata, everything they require."""
    seen: set[str] = set()
    # Requirements whose markers hold for the target (evaluated before they are queued).
    todo = [r for r in runtime_requirements() if applies(r)]
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        extras = sorted(requirement.extras)
        key = name + "[" + ",".join(extras) + "]"
        if key in seen:
            continue
        seen.add(key)
        for line in metadata.requires(name) or []:
            child = Requirement(line)
            if any(applies(child, extra) for extra in ["", *extras]):
                todo.append(child)
    return {key.split("[")[0] for key in seen}


def test_every_runtime_dependency_is_pinned_within_its_specifier() -> None:
    pinned = pins()
    for requirement in runtime_requirements():
        if not applies(requirement):
            continue
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{name} is not in {LOCK.name}: run `make lock`"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (
            f"{name}=={pinned[name]} does not satisfy {requirement.specifier}: run `make lock`"
        )


def test_lock_is_the_dependency_closure() -> None:
    pinned = set(pins())
    expected = closure()
    missing = sorted(expected - pinned)
    stale = sorted(pinned - expected)
    assert not missing, f"required but not pinned: {missing}; run `make lock`"
    assert not stale, f"pinned but required by nothing: {stale}; run `make lock`"


def test_every_pin_says_why() -> None:
    pinned = set(pins())
    for name in pinned:
        parents = via(name)
        assert parents, f"{name} has no '# via' annotation"
        for parent in parents:
            parent_name = canonicalize_name(parent.split()[0])
            assert parent_name == PROJECT or parent_name in pinned, (name, parent)


def test_no_package_indexes_or_sources() -> None:
    for line in lock_lines():
        lowered = line.strip().lower()
        for option in ("--index-url", "-i ", "--extra-index-url", "--find-links", "-f "):
            assert not lowered.startswith(option), line
        assert "://" not in lowered.split("#")[0], f"direct URL in the lock: {line}"


def test_generated_by_make_lock() -> None:
    head = "\n".join(lock_lines()[:3])
    assert "make lock" in head
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^lock:", makefile, re.MULTILINE)
    assert "uv pip compile pyproject.toml" in makefile


@pytest.mark.parametrize("name", ["fastapi", "sqlalchemy", "asyncpg", "uvicorn"])
def test_installed_matches_lock(name: str) -> None:
    # `make install` installs with the lock as constraints: the venv runs what production runs.
    assert Version(metadata.version(name)) == pins()[canonicalize_name(name)]
