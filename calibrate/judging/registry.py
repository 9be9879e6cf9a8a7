"""The backend registry: the `backend` key of a judge config names one of these, and this is where a
judge name or path becomes a validated `JudgeConfig` and a ready backend.

A panel's members are judges too: the registry reads their configs (their hashes are part of the
panel's meaning) and builds their backends, so a backend never needs to know the registry. A config
found outside the package that needs the user's trust (trust.py) is refused here, before any backend
exists, so nothing is ever sent for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from calibrate.data.families import check_family, model_family
from calibrate.errors import CalibrateError
from calibrate.judging.anthropic_backend import AnthropicBackend
from calibrate.judging.base import RULES, Backend
from calibrate.judging.config import COMMON_KEYS, JUDGES, JudgeConfig, read_with_base
from calibrate.judging.configfile import apply_keys, capped_concurrency, check_name, check_price, meaning_of
from calibrate.judging.constant import ConstantBackend
from calibrate.judging.heuristic import HeuristicBackend
from calibrate.judging.openai_backend import OpenAIBackend
from calibrate.judging.panel import PanelBackend
from calibrate.judging.remote import RemoteBackend, prompt_path
from calibrate.judging.trust import Provenance, bundled_facts, require_trust

BACKENDS: dict[str, type[Backend]] = {
    "anthropic": AnthropicBackend,
    "constant": ConstantBackend,
    "heuristic": HeuristicBackend,
    "openai": OpenAIBackend,
    "panel": PanelBackend,
}


def backend_class(name: str, where: str) -> type[Backend]:
    if name not in BACKENDS:
        raise CalibrateError(f"{where}: unknown backend {name!r}; available: {', '.join(sorted(BACKENDS))}")
    return BACKENDS[name]


def load_judge_config(judge: str, *, trust: bool = False) -> JudgeConfig:
    """Read, validate and hash a judge config given by name or path. A config from outside the package
    that needs the user's trust and has none is refused (trust.py); `trust=True` trusts it for this
    call (for CI runs of a repository's own configs)."""
    path = JUDGES.resolve(judge)
    raw, sources = read_with_base(path)
    where = f"judge config {path}"
    backend_name = raw.get("backend")
    if not isinstance(backend_name, str):
        raise CalibrateError(f"{where}: 'backend' must be set to a backend name")
    backend = backend_class(backend_name, where)
    keys = {**COMMON_KEYS, **backend.CONFIG_KEYS}
    values = apply_keys(raw, keys, where)
    values["name"] = check_name(values["name"] if values["name"] is not None else path.stem, where)
    if values["rule"] not in RULES:
        raise CalibrateError(f"{where}: 'rule' must be one of {', '.join(RULES)}, got {values['rule']!r}")
    values["concurrency"] = capped_concurrency(values["concurrency"], where)
    for key in ("price_input_per_mtok", "price_output_per_mtok"):
        values[key] = check_price(values[key], key, where)
    settings = {key: values[key] for key in backend.CONFIG_KEYS}
    backend.validate_settings(settings, path, where)
    meaning = meaning_of(values, keys)
    meaning.update(backend.meaning_extras(settings, path))
    members = _member_configs(backend, settings, path, trust)
    if members:  # a panel means what its members mean: their config hashes, in order
        meaning["member_hashes"] = [member.config_hash for member in members]
    config = JudgeConfig(
        name=values["name"], backend=backend_name, rule=values["rule"], description=values["description"],
        concurrency=values["concurrency"], price_input_per_mtok=values["price_input_per_mtok"],
        price_output_per_mtok=values["price_output_per_mtok"], settings=settings, path=path, meaning=meaning,
        sources=tuple(sources),
        family=(check_family(values["family"], where) if values["family"] is not None
                else model_family(settings.get("model"))),
    )
    require_trust(judge_provenance(config), bundled_facts, trust)
    return config


def prompt_files(settings: dict[str, Any], path: Path) -> tuple[Path, ...]:
    """The prompt files an API judge reads (remote.load_template): their text goes out with every request."""
    if settings["system_prompt_file"]:
        names = (settings["system_prompt_file"], settings["user_template_file"])
        return tuple(path.parent / name for name in names if name)
    return (prompt_path(settings, path),)


def judge_provenance(config: JudgeConfig) -> Provenance:
    """What the judge would send where (its key variable, its endpoint, its prompt files), and its files."""
    backend = backend_class(config.backend, f"judge config {config.path}")
    if not issubclass(backend, RemoteBackend):
        return Provenance("judge", config.path, config.name, config.sources, (), "", None)
    prompts = prompt_files(config.settings, config.path)
    return Provenance("judge", config.path, config.name, (*config.sources, *prompts), prompts,
                      config.settings["api_key_env"], backend(config).endpoint)


def _member_configs(backend: type[Backend], settings: dict, path: Path, trust: bool) -> list[JudgeConfig]:
    configs = []
    for member in backend.member_names(settings):
        config = load_judge_config(str(path.parent / member) if member.endswith(".toml") else member, trust=trust)
        if config.backend == "panel":
            raise CalibrateError(f"judge config {path}: member '{member}' is itself a panel; list its members instead")
        configs.append(config)
    return configs


def make_backend(config: JudgeConfig, *, trust: bool = False) -> Backend:
    """A ready backend for a config (a panel with its members' backends; `trust` as load_judge_config)."""
    backend = backend_class(config.backend, f"judge config {config.path}")
    if issubclass(backend, PanelBackend):  # only a panel is made of other judges
        members = _member_configs(backend, config.settings, config.path, trust)
        return backend(config, [make_backend(member, trust=trust) for member in members])
    return backend(config)
