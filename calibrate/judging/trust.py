"""Trust for configs found outside the package, as direnv's `allow` does it.

A judge or model config from ./judges, $CALIBRATE_JUDGES_DIR (./models, $CALIBRATE_MODELS_DIR) or a
path is someone else's file as often as the user's own: a cloned experiment repository is enough to put
one there. Such a config is refused until the user trusts it when it would take something it should not:
it shadows a bundled name (a file of a bundled config's name in ./judges or $CALIBRATE_JUDGES_DIR: the user
asks for `claude` and gets another), it sends a key variable of the
bundled configs (ANTHROPIC_API_KEY, ...) to a host the bundled configs do not send it to, or it reads a
prompt file outside its own folder (its text goes out with every request). A config with a key variable
of its own (a local server, a gateway) takes nothing of the user's, and the base URLs the user's own
environment names ($ANTHROPIC_BASE_URL, $OPENAI_BASE_URL) are the user's choice.

`calibrate judges trust FILE` records the hash of the config's files (the config, the configs it
extends, its prompt files) in the user's config folder ($XDG_CONFIG_HOME/calibrate/trusted.json); a
changed file is a new config and needs trusting again. `trusting()` (the CLI's --trust-judges) trusts
every config for a run, for CI where the configs are the repository's own.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from calibrate.errors import CalibrateError
from calibrate.judging.anthropic_backend import DEFAULT_ENDPOINT as ANTHROPIC_ENDPOINT
from calibrate.judging.anthropic_backend import AnthropicBackend
from calibrate.judging.config import JUDGES, MAX_EXTENDS_DEPTH
from calibrate.judging.configfile import MODELS, read_toml
from calibrate.judging.openai_backend import OpenAIBackend

TRUST_FILE = "trusted.json"
# A vendor's key variable -> the variable naming the vendor's base URL in the user's own environment.
USER_BASE_URLS = {"ANTHROPIC_API_KEY": "ANTHROPIC_BASE_URL", "OPENAI_API_KEY": "OPENAI_BASE_URL"}
_TRUST_ALL: ContextVar[bool] = ContextVar("trust_all", default=False)


@dataclass(frozen=True)
class Provenance:
    """What a loaded config would do with the user's things, and the files it was read from."""

    kind: str  # "judge" or "model"
    path: Path
    name: str
    files: tuple[Path, ...]  # the config, the configs it extends, its prompt files
    prompt_files: tuple[Path, ...]
    key_variable: str  # "" when it sends no key
    endpoint: str | None  # None for an offline judge


@dataclass(frozen=True)
class Bundled:
    """What the bundled configs are: their names per kind, and the hosts each key variable goes to."""

    names: dict[str, frozenset[str]]
    hosts: dict[str, frozenset[str]]


@contextmanager
def trusting(enabled: bool = True) -> Iterator[None]:
    """Trust every config loaded inside the block (the CLI's --trust-judges, the workflows' `trust`; for
    CI); with `enabled` false, the block trusts nothing more than usual."""
    if not enabled:
        yield
        return
    token = _TRUST_ALL.set(True)
    try:
        yield
    finally:
        _TRUST_ALL.reset(token)


def bundled_root() -> Path:
    return Path(str(resources.files("calibrate").joinpath("configs"))).resolve()


def is_bundled(path: Path) -> bool:
    """A file of the bundled configs, however reached (the repository's `judges` link included)."""
    return path.resolve().is_relative_to(bundled_root())


def host_of(url: str | None) -> str:
    return (urlsplit(url).hostname or "").lower() if url else ""


def lookup_folders(kind: str) -> list[Path]:
    """The folders outside the package where a name of this kind is looked up ($CALIBRATE_..._DIR, ./<kind>s)."""
    return [folder for folder in (JUDGES if kind == "judge" else MODELS).dirs() if not is_bundled(folder)]


def concerns(provenance: Provenance, bundled: Bundled) -> list[str]:
    """What the config would do that needs the user's trust; [] for a bundled config or a harmless one."""
    if all(is_bundled(file) for file in provenance.files):
        return []
    found = []
    lookup = {folder.resolve() for folder in lookup_folders(provenance.kind)}
    names = bundled.names.get(provenance.kind, frozenset())
    for file in provenance.files:
        if file.suffix == ".toml" and file.stem in names and file.resolve().parent in lookup:
            found.append(f"{'it' if file == provenance.path else f'it extends {file}, which'} takes the name of "
                         f"the bundled {provenance.kind} '{file.stem}'")
    variable, host = provenance.key_variable, host_of(provenance.endpoint)
    if variable in bundled.hosts:
        own = os.environ.get(USER_BASE_URLS.get(variable, ""), "")
        allowed = bundled.hosts[variable] | ({host_of(own)} if own else set())
        if host not in allowed:
            found.append(f"it sends {variable} to {host or provenance.endpoint}")
    folder = provenance.path.resolve().parent
    for prompt in provenance.prompt_files:
        if not (prompt.resolve().is_relative_to(folder) or is_bundled(prompt)):
            found.append(f"it sends the text of {prompt}, outside its folder, with every request")
    return found


def content_hash(files: tuple[Path, ...]) -> str:
    """One hash of the files' names and bytes: a change to any of them is a new config."""
    digest = hashlib.sha256()
    for file in files:
        digest.update(str(file.resolve()).encode() + b"\0")
        try:
            digest.update(file.read_bytes())
        except OSError:
            digest.update(b"\0missing")
        digest.update(b"\0")
    return digest.hexdigest()


def trust_file() -> Path:
    """Where trusted configs are recorded: $XDG_CONFIG_HOME/calibrate/trusted.json (~/.config by default)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base).expanduser() / "calibrate" / TRUST_FILE


def _trusted() -> dict[str, str]:
    path = trust_file()
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        raise CalibrateError(f"trusted configs {path}: cannot read it ({error}); move it aside") from None
    return {str(key): str(value) for key, value in recorded.get("trusted", {}).items()}


def is_trusted(provenance: Provenance) -> bool:
    return _trusted().get(str(provenance.path.resolve())) == content_hash(provenance.files)


def record_trust(provenance: Provenance) -> Path:
    """Trust the config as its files are now; returns the file the trust is recorded in."""
    path = trust_file()
    trusted = {**_trusted(), str(provenance.path.resolve()): content_hash(provenance.files)}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        aside = path.with_suffix(".tmp")
        aside.write_text(json.dumps({"trusted": trusted}, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        aside.replace(path)
    except OSError as error:
        raise CalibrateError(f"trusted configs {path}: cannot write it ({error.strerror})") from None
    return path


def _bundled_settings(file: Path) -> dict[str, Any]:
    """A bundled judge's top-level keys over those of the bundled judges it extends (within the package)."""
    chain: list[dict[str, Any]] = []
    while len(chain) < MAX_EXTENDS_DEPTH:
        raw = read_toml(file, f"bundled config {file}")
        chain.append(raw)
        base = raw.get("extends")
        if not isinstance(base, str):
            break
        file = file.parent / (base if base.endswith(".toml") else f"{base}.toml")
    merged: dict[str, Any] = {}
    for raw in reversed(chain):
        merged.update(raw)
    return merged


def bundled_facts() -> Bundled:
    """The bundled judge and model configs' names, and the hosts they send each key variable to (read from
    the files inside the package, with the backends' defaults; model configs speak the OpenAI API)."""
    defaults = {"openai": OpenAIBackend.CONFIG_KEYS, "anthropic": AnthropicBackend.CONFIG_KEYS}
    names: dict[str, frozenset[str]] = {}
    hosts: dict[str, set[str]] = {}
    for kind, folder in (("judge", JUDGES), ("model", MODELS)):
        files = sorted(bundled_root().joinpath(folder.folder).glob("*.toml"))
        names[kind] = frozenset(file.stem for file in files)
        for file in files:
            settings = _bundled_settings(file)
            backend = settings.get("backend") if kind == "judge" else "openai"
            keys = defaults.get(backend) if isinstance(backend, str) else None
            if keys is None:  # an offline judge or a panel: no key of its own
                continue
            variable = settings.get("api_key_env", keys["api_key_env"][0])
            if variable:
                url = settings.get("base_url", keys["base_url"][0]) or ANTHROPIC_ENDPOINT
                hosts.setdefault(variable, set()).add(host_of(url))
    return Bundled(names, {variable: frozenset(found) for variable, found in hosts.items()})


TRUST_SWITCH = "trust=True"  # how the library's refusal names the switch; the CLI names its flag instead


class UntrustedConfig(CalibrateError):
    """A config from outside the package that needs trust: the message names the trust switch as the
    caller knows it (`trust=True` in Python; the CLI's flag through `worded`)."""

    def worded(self, name_of: Callable[[str], str]) -> str:
        return super().worded(name_of).replace(TRUST_SWITCH, name_of("trust"))


def require_trust(provenance: Provenance, bundled: Callable[[], Bundled], trust: bool) -> None:
    """Refuse (one line: the file, what it would do, the command that trusts it) a config from outside
    the package that needs trust and has none; `trust` (or `trusting()`) trusts it for this run."""
    if trust or _TRUST_ALL.get() or all(is_bundled(file) for file in provenance.files):
        return
    found = concerns(provenance, bundled())
    if found and not is_trusted(provenance):
        raise UntrustedConfig(f"{provenance.kind} config {provenance.path} is not trusted: {'; '.join(found)}; "
                              f"if that is what you want, trust it: `calibrate judges trust {provenance.path}` "
                              f"(for a CI run of your own configs: {TRUST_SWITCH})")
