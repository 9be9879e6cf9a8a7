"""Judge configs: `judges/<name>.toml` files turned into validated objects with a meaning hash.

A config names its backend; the backend declares which keys it accepts, their defaults, and which of
them are transport settings (concurrency, timeouts) that do not change a judgment. The config hash
covers everything else, including the text of any prompt file, so a cached judgment is reused only
when the judge would answer the same way. Reading a config into a `JudgeConfig` needs the backend
registry, so `load_judge_config` lives in registry.py; this module holds the object and the files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from calibrate.errors import CalibrateError
from calibrate.judging.base import DEFAULT_RULE
from calibrate.judging.configfile import ConfigFolder, KeyTable, meaning_hash, read_toml

JUDGES = ConfigFolder(kind="judge", folder="judges", env="CALIBRATE_JUDGES_DIR")
MAX_EXTENDS_DEPTH = 32  # judges a variant may stand on; a deeper chain is a mistake (or an attack)
# Keys every judge has: (default, changes the judgment?).
COMMON_KEYS: KeyTable = {
    "name": (None, False),
    "description": ("", False),
    "backend": (None, True),
    "rule": (DEFAULT_RULE, True),
    "concurrency": (4, False),
    "price_input_per_mtok": (0.0, False),
    "price_output_per_mtok": (0.0, False),
    "family": (None, False),  # who made the judge's model (data/families.py); None: read from its `model`
}


@dataclass(frozen=True)
class JudgeConfig:
    """A judge's validated settings; `settings` holds backend-specific keys with defaults applied."""

    name: str
    backend: str
    rule: str
    description: str
    concurrency: int
    price_input_per_mtok: float
    price_output_per_mtok: float
    settings: dict[str, Any]
    path: Path
    meaning: dict[str, Any] = field(repr=False)
    sources: tuple[Path, ...] = field(default=(), repr=False)  # the config and the configs it extends
    family: str | None = None  # the model family (data/families.py): stated, else of its `model`; None offline

    def cost_usd(self, input_tokens: float, output_tokens: float) -> float:
        """Price of tokens at this judge's list prices (USD per million tokens)."""
        return (input_tokens * self.price_input_per_mtok + output_tokens * self.price_output_per_mtok) / 1e6

    @cached_property
    def config_hash(self) -> str:
        """Hash of everything that changes a judgment; the judgment cache is keyed on it."""
        return meaning_hash(self.meaning)


def judge_dirs() -> list[Path]:
    """Where judge names are looked up, first match wins: $CALIBRATE_JUDGES_DIR, ./judges, bundled."""
    return JUDGES.dirs()


def available_judges() -> dict[str, Path]:
    """Every judge name reachable by name, with the file it resolves to."""
    return JUDGES.available()


def read_with_base(path: Path) -> tuple[dict[str, Any], list[Path]]:
    """A config's keys over those of the judge it `extends` (by name or path, and so on down), so a
    variant states only what differs: keys replace the base's, tables are merged entry by entry.
    Its name and description default to its own, never the base's. Also the files read, the config's
    own first. Resolved as a loop with a depth limit: a chain of MAX_EXTENDS_DEPTH files is an error,
    never a RecursionError."""
    chain: list[tuple[Path, dict[str, Any]]] = []
    seen: set[Path] = set()  # the chain's files, resolved once each: a long chain stays linear to walk
    current = path
    while True:
        if len(chain) >= MAX_EXTENDS_DEPTH:
            raise CalibrateError(f"judge config {path}: 'extends' goes more than {MAX_EXTENDS_DEPTH} judges deep")
        raw = read_toml(current, f"judge config {current}")
        chain.append((current, raw))
        seen.add(current.resolve())
        base_name = raw.pop("extends", None)
        if base_name is None:
            break
        if not isinstance(base_name, str):
            raise CalibrateError(f"judge config {current}: 'extends' must name a judge")
        base_path = (current.parent / base_name) if base_name.endswith(".toml") else JUDGES.resolve(base_name)
        if base_path.resolve() in seen:
            raise CalibrateError(f"judge config {current}: 'extends' goes round in a circle through {base_path}")
        current = base_path
    merged: dict[str, Any] = {}
    for depth, (_, raw) in enumerate(reversed(chain)):  # the deepest base first
        if depth:  # a variant's name and description are its own
            merged.pop("name", None)
            merged.pop("description", None)
        tables = {key: {**merged[key], **value} for key, value in raw.items()
                  if isinstance(value, dict) and isinstance(merged.get(key), dict)}
        merged = {**merged, **raw, **tables}  # a table (e.g. [cues]) overrides the base's entry by entry
    return merged, [file for file, _ in chain]
