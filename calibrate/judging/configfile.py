"""What judge configs and model configs share: finding a config by name, reading its TOML, applying
the key table, and hashing what changes an answer.

A config kind (judges, models) is looked up in `$CALIBRATE_<KIND>_DIR`, then `./<kind>`, then the
configs bundled inside the package (`calibrate/configs/<kind>/`); the first match wins. Its key table
maps each key to `(default, changes the answer?)`: the keys that change an answer make up the
config's meaning, and the meaning's hash keys every cache entry, so transport settings (concurrency,
timeouts, prices) never invalidate a paid-for answer.
"""

from __future__ import annotations

import hashlib
import json
import os
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from calibrate.errors import CalibrateError

KeyTable = dict[str, tuple[Any, bool]]  # key -> (default, changes the answer?)


@dataclass(frozen=True)
class ConfigFolder:
    """One kind of config reachable by name: `kind` ("judge"), its folder ("judges") and variable."""

    kind: str
    folder: str
    env: str

    def dirs(self) -> list[Path]:
        """Where names are looked up, first match wins: $ENV, ./<folder>, the bundled configs."""
        dirs = [Path(os.environ[self.env]).expanduser()] if os.environ.get(self.env) else []
        dirs.append(Path.cwd() / self.folder)
        dirs.append(Path(str(resources.files("calibrate").joinpath("configs", self.folder))))
        return dirs

    def available(self) -> dict[str, Path]:
        """Every name reachable, with the file it resolves to."""
        found: dict[str, Path] = {}
        for folder in self.dirs():
            for path in sorted(folder.glob("*.toml")) if folder.is_dir() else []:
                found.setdefault(path.stem, path)
        return found

    def resolve(self, name: str) -> Path:
        """A name from the folders, or a path to a .toml file."""
        if name.endswith(".toml") or os.sep in name or "/" in name:
            path = Path(name).expanduser()
            if not path.is_file():
                raise CalibrateError(f"{self.kind}: no such {self.kind} config file: {name}", (self.kind,))
            return path
        found = self.available()
        if name not in found:
            known = ", ".join(sorted(found)) or "none"
            raise CalibrateError(f"{self.kind}: unknown {self.kind} {name!r}; configured {self.folder}: {known} "
                                 f"(looked in ${self.env}, ./{self.folder}, the bundled {self.folder})", (self.kind,))
        return found[name]


def read_toml(path: Path, where: str) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise CalibrateError(f"{where}: cannot read it: {str(error).splitlines()[0]}") from None


def apply_keys(raw: dict[str, Any], keys: KeyTable, where: str) -> dict[str, Any]:
    """Every key of the table, from the file or its default; a key the table lacks is an error."""
    unknown = sorted(set(raw) - set(keys))
    if unknown:
        raise CalibrateError(f"{where}: unknown key '{unknown[0]}' (allowed: {', '.join(sorted(keys))})")
    return {key: raw.get(key, default) for key, (default, _) in keys.items()}


def meaning_of(values: dict[str, Any], keys: KeyTable) -> dict[str, Any]:
    """The values of the keys that change an answer."""
    return {key: values[key] for key, (_, meaningful) in keys.items() if meaningful}


def meaning_hash(meaning: dict[str, Any]) -> str:
    """A short stable hash of a meaning (canonical JSON); cache keys are built on it."""
    canonical = json.dumps(meaning, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]
