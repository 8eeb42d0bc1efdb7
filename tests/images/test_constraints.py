"""constraints/constraints.txt pins every requirement of every extra, within the ranges
pyproject.toml allows: the images and `make install` install the same versions."""

from __future__ import annotations

import re
import tomllib

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.version import Version

from tests.fixtures.processes import REPO_ROOT

CONSTRAINTS = REPO_ROOT / "constraints" / "constraints.txt"
EXTRAS = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"][
    "optional-dependencies"
]
PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>\S+)\s*(?:;(?P<marker>.*))?$")


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins() -> dict[str, Version]:
    """name -> pinned version, for the pins whose marker holds on this interpreter."""
    pinned = {}
    for line in CONSTRAINTS.read_text().splitlines():
        match = PIN.match(line.strip())
        if match and (match["marker"] is None or Marker(match["marker"]).evaluate()):
            pinned[normalize(match["name"])] = Version(match["version"])
    return pinned


def test_every_extra_requirement_is_pinned_within_its_range() -> None:
    pinned = pins()
    assert len(pinned) > 50, "the constraints file pins almost nothing"
    problems = []
    for extra, requirements in EXTRAS.items():
        for text in requirements:
            requirement = Requirement(text)
            version = pinned.get(normalize(requirement.name))
            if version is None:
                problems.append(f"[{extra}] {requirement.name} is not pinned")
            elif not requirement.specifier.contains(version, prereleases=True):
                problems.append(
                    f"[{extra}] {requirement.name}=={version} is outside {requirement.specifier}"
                )
    assert not problems, "run `make constraints`:\n" + "\n".join(problems)


def test_nothing_is_left_to_move() -> None:
    """Every line is an exact pin: no ranges, no `latest`, no URLs."""
    lines = [
        line.strip()
        for line in CONSTRAINTS.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    loose = [line for line in lines if not PIN.match(line)]
    assert not loose, loose
