"""Pinned installs: the lock file pins every package the tests install, each pin within pyproject.toml's
range, and the libraries calibrate uses deeply are capped below their next major version."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parent.parent
CAPPED = ("pandas", "numpy", "pyarrow", "aiohttp", "openai", "anthropic", "datasets", "scikit-learn", "statsmodels")


def pins() -> dict[str, Version]:
    found = {}
    for line in (REPO / "requirements-lock.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            found[canonicalize_name(name)] = Version(version)
    return found


def test_the_lock_pins_every_requirement_within_its_range_and_deep_apis_are_capped():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(text) for text in [*project["dependencies"], *project["optional-dependencies"]["test"]]]
    pinned = pins()
    for requirement in requirements:
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{name} is not in requirements-lock.txt"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (name, pinned[name])
        for extra in requirement.extras:  # openai[aiohttp]: the extra's packages are pinned too
            assert canonicalize_name(extra) in pinned
    by_name = {canonicalize_name(r.name): r for r in requirements}
    for name in CAPPED:
        caps = [spec for spec in by_name[name].specifier if spec.operator == "<"]
        assert caps, f"{name} has no upper bound"
        cap = Version(caps[0].version)
        assert cap.release[1:] in ((), (0,), (0, 0)) and cap.major == pinned[name].major + 1, (name, cap)
