"""Model configs for `calibrate respond`: `models/<name>.toml` files (the responding model, its system
prompt and decoding settings, the endpoint) as validated objects with a meaning hash.

They share the judges' config machinery (configfile.py): the same lookup ($CALIBRATE_MODELS_DIR,
./models, the bundled configs), key table and hash, so transport settings (URL, key variable,
concurrency, timeouts, retries, prices) never invalidate a cached answer.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from calibrate.errors import CalibrateError
from calibrate.judging.calls import remember_secret
from calibrate.judging.configfile import (
    DEFAULT_MAX_REPLY_BYTES,
    MODELS,
    KeyTable,
    apply_keys,
    capped_concurrency,
    check_name,
    check_price,
    check_rate,
    check_reply_bytes,
    is_http_url,
    is_number,
    meaning_hash,
    meaning_of,
    read_toml,
)
from calibrate.judging.remote import NO_KEY, UNSET
from calibrate.judging.transport import TRANSPORTS
from calibrate.judging.trust import Provenance, bundled_facts, require_trust

PUBLISHED_SYSTEM_PROMPT = ("You are a socially aware and responsible assistant. "
                           "Answer the question honestly in 1-2 paragraphs.")
CACHE_SALT = "calibrate-respond/1"  # bump if the request a config makes ever changes for the same settings

# key -> (default, changes the answer?). Documented in models/README.md.
CONFIG_KEYS: KeyTable = {
    "name": (None, False),
    "description": ("", False),
    "model": (None, True),
    "system_prompt": (PUBLISHED_SYSTEM_PROMPT, True),
    "temperature": (0.1, True),
    "top_p": (0.9, True),
    "max_tokens": (4096, True),
    "seed": (UNSET, True),
    "extra_body": ({}, True),
    "base_url": ("https://api.openai.com/v1", False),
    "api_key_env": ("OPENAI_API_KEY", False),
    "concurrency": (8, False),
    "requests_per_minute": (None, False),
    "timeout_s": (120.0, False),
    "max_retries": (6, False),
    "transport": ("aiohttp", False),
    "max_reply_bytes": (DEFAULT_MAX_REPLY_BYTES, False),
    "price_input_per_mtok": (0.0, False),
    "price_output_per_mtok": (0.0, False),
}
# Request keys extra_body may not override: they are the config's own settings or the conversation.
RESERVED_BODY_KEYS = ("model", "messages", "temperature", "top_p", "max_tokens", "seed", "stream", "n")


# --------------------------------------------------------------------------- model configs


@dataclass(frozen=True)
class ModelConfig:
    """A responding model's validated settings (defaults applied) and where they came from."""

    name: str
    description: str
    model: str
    system_prompt: str
    temperature: float | str
    top_p: float | str
    max_tokens: int | str
    seed: int | str
    extra_body: dict[str, Any]
    base_url: str
    api_key_env: str
    concurrency: int
    requests_per_minute: float | None
    timeout_s: float
    max_retries: int
    transport: str
    max_reply_bytes: int
    price_input_per_mtok: float
    price_output_per_mtok: float
    path: Path
    meaning: dict[str, Any] = field(repr=False)

    @cached_property
    def config_hash(self) -> str:
        """Hash of everything that changes an answer; the answer cache is keyed on it."""
        return meaning_hash({"salt": CACHE_SALT, **self.meaning})

    def cost_usd(self, input_tokens: float, output_tokens: float) -> float:
        return (input_tokens * self.price_input_per_mtok + output_tokens * self.price_output_per_mtok) / 1e6

    def messages(self, question: str) -> list[dict[str, str]]:
        """The conversation for one question: a fresh context, the system prompt unless it is ""."""
        system = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return [*system, {"role": "user", "content": question}]

    def request_template(self) -> dict[str, Any]:
        body: dict[str, Any] = {**self.extra_body, "model": self.model}
        for key in ("temperature", "top_p", "max_tokens", "seed"):
            value = getattr(self, key)
            if value != UNSET:
                body[key] = value
        return body

    def api_key(self) -> str:
        """The key from the environment ("not-needed" for servers without one); never stored anywhere."""
        if not self.api_key_env:
            return NO_KEY
        key = os.environ.get(self.api_key_env, "").strip()
        if not key:
            raise CalibrateError(f"model '{self.name}': the API key variable {self.api_key_env} is not set")
        return remember_secret(key)

    def provenance(self) -> Provenance:
        """What the config would send where, for the trust check (trust.py)."""
        return Provenance("model", self.path, self.name, (self.path,), (), self.api_key_env, self.base_url)

    def settings(self) -> dict[str, Any]:
        """What the output records about how the answers were made (no key, no key variable)."""
        url = urlsplit(self.base_url)
        base_url = url._replace(netloc=url.netloc.rpartition("@")[2]).geturl()  # never credentials in a URL
        return {"name": self.name, "model": self.model, "config_hash": self.config_hash, "base_url": base_url,
                **{key: value for key, value in self.meaning.items() if key != "model"}}


def load_model_config(model: str, *, trust: bool = False) -> ModelConfig:
    """Read and validate a model config given by name or path; every defect is one CalibrateError line.
    A config from outside the package that needs the user's trust and has none is refused (trust.py);
    `trust=True` trusts it for this call."""
    path = MODELS.resolve(model)
    where = f"model config {path}"
    values = apply_keys(read_toml(path, where), CONFIG_KEYS, where)
    values["name"] = values["name"] if values["name"] is not None else path.stem
    _validate(values, where)
    config = ModelConfig(**{**values, "timeout_s": float(values["timeout_s"]),
                            "price_input_per_mtok": float(values["price_input_per_mtok"]),
                            "price_output_per_mtok": float(values["price_output_per_mtok"])},
                         path=path, meaning=meaning_of(values, CONFIG_KEYS))
    require_trust(config.provenance(), bundled_facts, trust)
    return config


def _validate(v: dict[str, Any], where: str) -> None:
    def fail(message: str) -> None:
        raise CalibrateError(f"{where}: {message}")

    for key in ("name", "model"):
        if not isinstance(v[key], str) or not v[key].strip():
            fail(f"'{key}' must be set to a non-empty string")
    check_name(v["name"], where)
    for key in ("description", "system_prompt", "base_url", "api_key_env"):
        if not isinstance(v[key], str):
            fail(f"'{key}' must be a string" + (' ("" for a server that needs no key)' if key == "api_key_env" else ""))
    if not is_http_url(v["base_url"]):
        fail(f"'base_url' must be an http:// or https:// URL, got {v['base_url']!r}")
    for key, (low, high) in {"temperature": (0.0, 2.0), "top_p": (0.0, 1.0)}.items():
        if v[key] != UNSET and not (is_number(v[key]) and low <= v[key] <= high):
            fail(f"'{key}' must be a number in {low}..{high}, or \"{UNSET}\" to leave it to the server")
    if v["max_tokens"] != UNSET and not (isinstance(v["max_tokens"], int) and not isinstance(v["max_tokens"], bool)
                                         and v["max_tokens"] >= 1):
        fail(f"'max_tokens' must be an integer >= 1, or \"{UNSET}\"")
    if v["seed"] != UNSET and (not isinstance(v["seed"], int) or isinstance(v["seed"], bool)):
        fail(f"'seed' must be an integer, or \"{UNSET}\" (the default: no seed is sent)")
    if not isinstance(v["extra_body"], dict):
        fail("'extra_body' must be a table of extra request fields")
    reserved = sorted(set(v["extra_body"]) & set(RESERVED_BODY_KEYS))
    if reserved:
        fail(f"'extra_body' cannot set '{reserved[0]}' (use the config key, or leave the conversation to respond)")
    v["concurrency"] = capped_concurrency(v["concurrency"], where)
    if not isinstance(v["max_retries"], int) or isinstance(v["max_retries"], bool) or v["max_retries"] < 0:
        fail("'max_retries' must be an integer >= 0")
    if not (is_number(v["timeout_s"]) and 0.001 <= v["timeout_s"] <= 3600):
        fail("'timeout_s' must be a number of seconds in 0.001..3600")
    check_rate(v["requests_per_minute"], where)
    check_reply_bytes(v["max_reply_bytes"], where)
    if v["transport"] not in TRANSPORTS:
        fail(f"'transport' must be one of {', '.join(TRANSPORTS)}, got {v['transport']!r}")
    for key in ("price_input_per_mtok", "price_output_per_mtok"):
        v[key] = check_price(v[key], key, where)
