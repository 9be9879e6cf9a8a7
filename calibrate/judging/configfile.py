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
import logging
import math
import os
import resource
import stat
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from calibrate.errors import CalibrateError

log = logging.getLogger("calibrate")

KeyTable = dict[str, tuple[Any, bool]]  # key -> (default, changes the answer?)
# A config or prompt file larger than this is not one (and /dev/zero would never end).
MAX_CONFIG_FILE_CHARS = 1 << 20
MAX_NAME_CHARS = 100
# USD per million tokens: the dearest models cost hundreds; a million leaves room and keeps sums finite.
MAX_PRICE_PER_MTOK = 1_000_000.0
# Requests per minute: below one a run would seem to hang; above a million there is no limit to keep.
RATE_BOUNDS = (1.0, 1_000_000.0)
# A reply's body, decompressed, in bytes: a judgment or an answer is kilobytes; a few megabytes leave room
# for long answers, and a 100 MB reply or a gzip bomb stops there (`max_reply_bytes`, read while streaming).
DEFAULT_MAX_REPLY_BYTES = 4 * 2**20
REPLY_BYTES_BOUNDS = (2**10, 2**30)


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


MODELS = ConfigFolder(kind="model", folder="models", env="CALIBRATE_MODELS_DIR")


def read_text_file(path: Path, where: str, what: str) -> str:
    """The text of a config or prompt file: a regular file (a FIFO would block, a device never end)
    of at most MAX_CONFIG_FILE_CHARS characters; anything else is one line naming it."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise CalibrateError(f"{where}: {what} {path} is not a regular file")
        if info.st_size > 4 * MAX_CONFIG_FILE_CHARS:  # 4 bytes at most per UTF-8 character
            raise CalibrateError(f"{where}: {what} {path} is larger than {MAX_CONFIG_FILE_CHARS:,} characters")
        with path.open(encoding="utf-8") as file:
            text = file.read(MAX_CONFIG_FILE_CHARS + 1)
    except (OSError, UnicodeDecodeError) as error:
        raise CalibrateError(f"{where}: cannot read {what} {path} ({error})") from None
    if len(text) > MAX_CONFIG_FILE_CHARS:
        raise CalibrateError(f"{where}: {what} {path} is larger than {MAX_CONFIG_FILE_CHARS:,} characters")
    return text


def read_toml(path: Path, where: str) -> dict[str, Any]:
    try:
        return tomllib.loads(read_text_file(path, where, "the file"))
    except tomllib.TOMLDecodeError as error:
        raise CalibrateError(f"{where}: cannot read it: {str(error).splitlines()[0]}") from None


def check_name(name: Any, where: str) -> str:
    """A config's name becomes a file or folder name (reports/<name>/, <name>.parquet): it must be one,
    not a path: no separators or control characters, not hidden, not '.' or '..', not too long."""
    if not (isinstance(name, str) and 0 < len(name) <= MAX_NAME_CHARS and not name.startswith((".", "-"))
            and name.strip() == name and not any(c in "/\\" or not c.isprintable() for c in name)):
        raise CalibrateError(f"{where}: 'name' must be a plain file name (no '/', '\\', control characters, "
                             f"leading '.' or '-', at most {MAX_NAME_CHARS} characters), got {name!r}")
    return name


def is_number(value: Any) -> bool:
    """A finite int or float, not a bool (TOML reads nan and inf as floats)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_price(value: Any, key: str, where: str) -> float:
    if not (is_number(value) and 0 <= value <= MAX_PRICE_PER_MTOK):
        raise CalibrateError(f"{where}: '{key}' must be a number in 0..{MAX_PRICE_PER_MTOK:,.0f} "
                             f"(USD per million tokens), got {value!r}")
    return float(value)


def check_rate(value: Any, where: str) -> None:
    """requests_per_minute: unset, or a number of requests a minute within RATE_BOUNDS."""
    low, high = RATE_BOUNDS
    if value is not None and not (is_number(value) and low <= value <= high):
        raise CalibrateError(f"{where}: 'requests_per_minute' must be a number in {low:g}..{high:,.0f}, got {value!r}")


def check_reply_bytes(value: Any, where: str) -> int:
    """max_reply_bytes: a whole number of bytes within REPLY_BYTES_BOUNDS."""
    low, high = REPLY_BYTES_BOUNDS
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise CalibrateError(f"{where}: 'max_reply_bytes' must be a whole number of bytes in {low:,}..{high:,} "
                             f"(a reply's body, decompressed), got {value!r}")
    return value


def is_http_url(value: Any) -> bool:
    """An http:// or https:// URL naming a host (not "127.0.0.1:1/v1", not file:///...)."""
    if not isinstance(value, str):
        return False
    try:
        url = urlsplit(value)
        return url.scheme in ("http", "https") and bool(url.hostname) and (url.port is None or url.port > 0)
    except ValueError:  # e.g. a port that is not a number
        return False


def open_file_limit() -> int:
    """How many files (connections included) this process may keep open."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def capped_concurrency(value: Any, where: str) -> int:
    """A positive integer, at most half the open-file limit (each request in flight holds a
    connection; the rest is left for the cache and the outputs), with a warning when it is cut."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise CalibrateError(f"{where}: 'concurrency' must be a positive integer")
    limit = open_file_limit()
    cap = max(1, limit // 2)
    if value > cap:
        log.warning(f"{where}: concurrency {value} would need more connections than this process may open "
                    f"(open-file limit {limit}); using {cap}")
        return cap
    return value


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
