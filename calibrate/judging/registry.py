"""The backend registry: the `backend` key of a judge config names one of these, and this is where a
judge name or path becomes a validated `JudgeConfig` and a ready backend.

A panel's members are judges too: the registry reads their configs (their hashes are part of the
panel's meaning) and builds their backends, so a backend never needs to know the registry.
"""

from __future__ import annotations

from calibrate.errors import CalibrateError
from calibrate.judging.anthropic_backend import AnthropicBackend
from calibrate.judging.base import RULES, Backend
from calibrate.judging.config import COMMON_KEYS, JUDGES, JudgeConfig, read_with_base
from calibrate.judging.configfile import apply_keys, capped_concurrency, check_name, check_price, meaning_of
from calibrate.judging.constant import ConstantBackend
from calibrate.judging.heuristic import HeuristicBackend
from calibrate.judging.openai_backend import OpenAIBackend
from calibrate.judging.panel import PanelBackend

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


def load_judge_config(judge: str) -> JudgeConfig:
    """Read, validate and hash a judge config given by name or path."""
    path = JUDGES.resolve(judge)
    raw = read_with_base(path)
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
    members = _member_configs(backend, settings, path)
    if members:  # a panel means what its members mean: their config hashes, in order
        meaning["member_hashes"] = [member.config_hash for member in members]
    return JudgeConfig(
        name=values["name"], backend=backend_name, rule=values["rule"], description=values["description"],
        concurrency=values["concurrency"], price_input_per_mtok=values["price_input_per_mtok"],
        price_output_per_mtok=values["price_output_per_mtok"], settings=settings, path=path, meaning=meaning,
    )


def _member_configs(backend: type[Backend], settings: dict, path) -> list[JudgeConfig]:
    configs = []
    for member in backend.member_names(settings):
        config = load_judge_config(str(path.parent / member) if member.endswith(".toml") else member)
        if config.backend == "panel":
            raise CalibrateError(f"judge config {path}: member '{member}' is itself a panel; list its members instead")
        configs.append(config)
    return configs


def make_backend(config: JudgeConfig) -> Backend:
    """A ready backend for a config (a panel with its members' backends)."""
    backend = backend_class(config.backend, f"judge config {config.path}")
    if issubclass(backend, PanelBackend):  # only a panel is made of other judges
        return backend(config, [make_backend(member) for member in _member_configs(backend, config.settings,
                                                                                    config.path)])
    return backend(config)
