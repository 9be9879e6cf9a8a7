"""Judge configs: `judges/<name>.toml` files turned into validated objects with a meaning hash.

A config names its backend; the backend declares which keys it accepts, their defaults, and which of
them are transport settings (concurrency, timeouts) that do not change a judgment. The config hash
covers everything else, including the text of any prompt file, so a cached judgment is reused only
when the judge would answer the same way.
"""

from __future__ import annotations

import hashlib
import json
import os
import tomllib
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

from calibrate.errors import CalibrateError
from calibrate.rules import DEFAULT_RULE, RULES

JUDGES_DIR_ENV = "CALIBRATE_JUDGES_DIR"
# Keys every judge has: (default, changes the judgment?).
COMMON_KEYS: dict[str, tuple[Any, bool]] = {
    "name": (None, False),
    "description": ("", False),
    "backend": (None, True),
    "rule": (DEFAULT_RULE, True),
    "concurrency": (4, False),
    "price_input_per_mtok": (0.0, False),
    "price_output_per_mtok": (0.0, False),
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

    def cost_usd(self, input_tokens: float, output_tokens: float) -> float:
        """Price of tokens at this judge's list prices (USD per million tokens)."""
        return (input_tokens * self.price_input_per_mtok + output_tokens * self.price_output_per_mtok) / 1e6

    @cached_property
    def config_hash(self) -> str:
        """Hash of everything that changes a judgment; the judgment cache is keyed on it."""
        canonical = json.dumps(self.meaning, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def judge_dirs() -> list[Path]:
    """Where judge names are looked up, first match wins: $CALIBRATE_JUDGES_DIR, ./judges, bundled."""
    dirs = []
    if os.environ.get(JUDGES_DIR_ENV):
        dirs.append(Path(os.environ[JUDGES_DIR_ENV]))
    dirs.append(Path.cwd() / "judges")
    dirs.append(Path(str(resources.files("calibrate.bundled_judges"))))
    return dirs


def available_judges() -> dict[str, Path]:
    """Every judge name reachable by `--judge NAME`, with the file it resolves to."""
    found: dict[str, Path] = {}
    for folder in judge_dirs():
        for path in sorted(folder.glob("*.toml")) if folder.is_dir() else []:
            found.setdefault(path.stem, path)
    return found


def resolve_judge_path(judge: str) -> Path:
    """`--judge` takes a name from the judge folders or a path to a .toml file."""
    if judge.endswith(".toml") or os.sep in judge:
        path = Path(judge).expanduser()
        if not path.is_file():
            raise CalibrateError(f"--judge: no such judge file: {judge}")
        return path
    judges = available_judges()
    if judge not in judges:
        known = ", ".join(sorted(judges)) or "none"
        raise CalibrateError(f"--judge: unknown judge {judge!r}; configured judges: {known}")
    return judges[judge]


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise CalibrateError(f"judge config {path}: cannot read it: {error}") from None


def _read_with_base(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    """A config's keys over those of the judge it `extends` (by name or path, recursively), so a
    variant states only what differs: keys replace the base's, tables are merged entry by entry.
    Its name and description default to its own, never the base's."""
    raw = _read_toml(path)
    base_name = raw.pop("extends", None)
    if base_name is None:
        return raw
    if not isinstance(base_name, str):
        raise CalibrateError(f"judge config {path}: 'extends' must name a judge")
    base_path = (path.parent / base_name) if base_name.endswith(".toml") else resolve_judge_path(base_name)
    if base_path.resolve() in seen or base_path.resolve() == path.resolve():
        raise CalibrateError(f"judge config {path}: 'extends' goes round in a circle through {base_path}")
    base = _read_with_base(base_path, (*seen, path.resolve()))
    base.pop("name", None)
    base.pop("description", None)
    merged = {**base, **raw}
    for key, value in raw.items():  # a table (e.g. [cues]) overrides the base's entry by entry
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merged[key] = {**base[key], **value}
    return merged


def load_judge_config(judge: str) -> JudgeConfig:
    """Read, validate and hash a judge config given by name or path."""
    from calibrate.judging.backends import backend_class

    path = resolve_judge_path(judge)
    raw = _read_with_base(path, seen=())
    where = f"judge config {path}"
    backend_name = raw.get("backend")
    if not isinstance(backend_name, str):
        raise CalibrateError(f"{where}: 'backend' must be set to a backend name")
    backend = backend_class(backend_name, where)
    keys = {**COMMON_KEYS, **backend.CONFIG_KEYS}
    unknown = sorted(set(raw) - set(keys))
    if unknown:
        raise CalibrateError(f"{where}: unknown key '{unknown[0]}' (allowed: {', '.join(sorted(keys))})")
    values = {key: raw.get(key, default) for key, (default, _) in keys.items()}
    values["name"] = values["name"] or path.stem
    if values["rule"] not in RULES:
        raise CalibrateError(f"{where}: 'rule' must be one of {', '.join(RULES)}, got {values['rule']!r}")
    if isinstance(values["concurrency"], bool) or not isinstance(values["concurrency"], int) or values["concurrency"] < 1:
        raise CalibrateError(f"{where}: 'concurrency' must be a positive integer")
    for key in ("price_input_per_mtok", "price_output_per_mtok"):
        price = values[key]
        if isinstance(price, bool) or not isinstance(price, (int, float)) or price < 0:
            raise CalibrateError(f"{where}: '{key}' must be a non-negative number (USD per million tokens)")
    settings = {key: values[key] for key in backend.CONFIG_KEYS}
    backend.validate_settings(settings, path, where)
    meaning = {key: values[key] for key, (_, meaningful) in keys.items() if meaningful}
    meaning.update(backend.meaning_extras(settings, path))
    return JudgeConfig(
        name=values["name"], backend=backend_name, rule=values["rule"], description=values["description"],
        concurrency=values["concurrency"], price_input_per_mtok=float(values["price_input_per_mtok"]),
        price_output_per_mtok=float(values["price_output_per_mtok"]), settings=settings, path=path, meaning=meaning,
    )
