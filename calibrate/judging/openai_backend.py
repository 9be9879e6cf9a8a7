"""Backend `openai`: any OpenAI-compatible chat-completions server, through the official `openai` SDK.

Works with OpenAI, Anthropic's OpenAI-compatible endpoint, vLLM, SGLang, Ollama, llama.cpp server and
LiteLLM. The SDK client owns the endpoint, key and headers; `transport` chooses what carries the
requests: calibrate's lean HTTP/1.1 client (default), aiohttp, or the SDK itself (transport.py says why). A reply is validated field by
field; an invalid one is asked again up to `parse_retries` times, then becomes a typed failure.
"""

from __future__ import annotations

import logging
import os
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import orjson

from calibrate.errors import CalibrateError
from calibrate.judging.base import (
    Backend,
    PairView,
    Verdict,
    extract_json,
    judgment_schema,
    validate_fields,
)
from calibrate.judging.calls import (
    CallFailed,
    RateLimiter,
    RetryPolicy,
    call_with_retries,
)
from calibrate.judging.config import judge_dirs
from calibrate.judging.prompt import PromptTemplate, load_prompt
from calibrate.judging.transport import TRANSPORTS, ChatTransport, make_transport

RESPONSE_FORMATS = ("json_schema", "json_object", "none")
log = logging.getLogger("calibrate")
NO_KEY = "not-needed"
UNSET = "unset"  # a decoding setting left out of the request, so the server's default applies


def prompt_path(settings: dict[str, Any], config_path: Path) -> Path:
    """Where `prompt` points: a path relative to the config file, or a file name found in the
    config's own prompts/ folder or in the prompts/ of the judge folders (so a judge TOML kept
    anywhere can use the shipped prompts by name)."""
    name = Path(settings["prompt"])
    if len(name.parts) > 1 or name.is_absolute():
        return config_path.parent / name
    folders = [config_path.parent / "prompts", *(folder / "prompts" for folder in judge_dirs())]
    for folder in folders:
        if (folder / name).is_file():
            return folder / name
    return folders[0] / name  # missing: load_prompt reports it with this path


class OpenAIBackend(Backend):
    # key -> (default, changes the judgment?)
    CONFIG_KEYS: ClassVar[dict[str, tuple[Any, bool]]] = {
        "model": (None, True),
        "prompt": (None, False),  # its text is hashed instead (meaning_extras)
        "temperature": (0.1, True),
        "top_p": (0.9, True),
        "max_tokens": (2048, True),
        "seed": (None, True),
        "response_format": ("json_schema", True),
        "max_answer_chars": (10_000, True),
        "base_url": ("https://api.openai.com/v1", False),
        "api_key_env": ("OPENAI_API_KEY", False),
        "requests_per_minute": (None, False),
        "timeout_s": (120.0, False),
        "max_retries": (6, False),
        "parse_retries": (2, False),
        "transport": ("lean", False),
    }

    @classmethod
    def validate_settings(cls, settings: dict[str, Any], path: Path, where: str) -> None:
        for key in ("model", "prompt"):
            if not isinstance(settings[key], str) or not settings[key]:
                raise CalibrateError(f"{where}: '{key}' must be set")
        if settings["transport"] not in TRANSPORTS:
            raise CalibrateError(f"{where}: 'transport' must be one of {', '.join(TRANSPORTS)}")
        if settings["response_format"] not in RESPONSE_FORMATS:
            raise CalibrateError(f"{where}: 'response_format' must be one of {', '.join(RESPONSE_FORMATS)}")
        numbers = {"temperature": (0.0, 2.0), "top_p": (0.0, 1.0), "timeout_s": (0.001, 3600.0)}
        for key, (low, high) in numbers.items():
            value = settings[key]
            if key != "timeout_s" and value == UNSET:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
                raise CalibrateError(f"{where}: '{key}' must be a number in {low}..{high}"
                                     + ("" if key == "timeout_s" else f', or "{UNSET}" to leave it to the server'))
        for key, low in (("max_tokens", 1), ("max_answer_chars", 100), ("max_retries", 0), ("parse_retries", 0)):
            if isinstance(settings[key], bool) or not isinstance(settings[key], int) or settings[key] < low:
                raise CalibrateError(f"{where}: '{key}' must be an integer >= {low}")
        rpm = settings["requests_per_minute"]
        if rpm is not None and (isinstance(rpm, bool) or not isinstance(rpm, (int, float)) or rpm <= 0):
            raise CalibrateError(f"{where}: 'requests_per_minute' must be a positive number")
        if not isinstance(settings["api_key_env"], str):
            raise CalibrateError(f"{where}: 'api_key_env' must be an environment variable name, or \"\" for none")

    @classmethod
    def meaning_extras(cls, settings: dict[str, Any], path: Path) -> dict[str, Any]:
        """The prompt's words change judgments; reading them here also checks the prompt file."""
        return {"prompt_text": load_prompt(prompt_path(settings, path), f"judge config {path}").text}

    def __init__(self, config) -> None:
        super().__init__(config)
        settings = config.settings
        self.prompt: PromptTemplate = load_prompt(prompt_path(settings, config.path), f"judge config {config.path}")
        self.policy = RetryPolicy(max_retries=settings["max_retries"])
        self.limiter: RateLimiter | None = None
        self.transport: ChatTransport | None = None
        self.request_template = self._request_template()

    def _request_template(self) -> dict[str, Any]:
        s = self.config.settings
        body: dict[str, Any] = {"model": s["model"], "max_tokens": s["max_tokens"],
                                **{key: s[key] for key in ("temperature", "top_p") if s[key] != UNSET}}
        if s["seed"] is not None:
            body["seed"] = s["seed"]
        if s["response_format"] == "json_schema":
            body["response_format"] = {"type": "json_schema", "json_schema": {
                "name": "valbench_judgment", "strict": True, "schema": judgment_schema(self.config.rule)}}
        elif s["response_format"] == "json_object":
            body["response_format"] = {"type": "json_object"}
        return body

    def api_key(self) -> str:
        variable = self.config.settings["api_key_env"]
        if not variable:
            return NO_KEY
        key = os.environ.get(variable, "").strip()
        if not key:
            raise CalibrateError(f"judge '{self.config.name}': the API key variable {variable} is not set")
        return key

    def preflight(self) -> None:
        self.api_key()

    def _connect(self) -> ChatTransport:
        """One transport per event-loop run: aiohttp sessions are bound to the loop that made them."""
        if self.transport is None:
            s = self.config.settings
            self.transport = make_transport(s["transport"], self.api_key(), s["base_url"], self.config.concurrency,
                                            s["timeout_s"])
            self.limiter = RateLimiter(s["requests_per_minute"])  # its lock belongs to this loop too
        return self.transport

    async def aclose(self) -> None:
        if self.transport is not None:
            await self.transport.close()
            self.transport = None

    def build_request(self, view: PairView) -> tuple[dict[str, Any], int]:
        """The chat-completions body for one view, and how many answer characters were cut."""
        messages, cut = self.prompt.render(view, self.config.settings["max_answer_chars"])
        return {**self.request_template, "messages": messages}, cut

    async def judge(self, view: PairView) -> Verdict:
        transport = self._connect()
        body, cut = self.build_request(view)
        totals = {"input_tokens": 0, "output_tokens": 0, "attempts": 0}
        where = f"judge '{self.config.name}' at {self.config.settings['base_url']}"
        asked = 0
        while True:
            try:
                raw, attempts = await call_with_retries(partial(transport.post, body), self.policy, self.limiter, where)
            except CallFailed as failure:
                totals["attempts"] += failure.attempts
                if failure.status in (400, 422) and "response_format" in body:
                    body = self._without_response_format(body, failure.reason)
                    continue
                return Verdict(None, "", "api_error", failure.reason, truncated_chars=cut, **totals)
            totals["attempts"] += attempts
            verdict = read_completion(raw)
            totals["input_tokens"] += verdict.input_tokens
            totals["output_tokens"] += verdict.output_tokens
            asked += 1
            if verdict.parse_status == "ok" or asked > self.config.settings["parse_retries"]:
                break
        verdict.input_tokens, verdict.output_tokens = totals["input_tokens"], totals["output_tokens"]
        verdict.attempts, verdict.truncated_chars = totals["attempts"], cut
        return verdict

    def _without_response_format(self, body: dict[str, Any], reason: str) -> dict[str, Any]:
        """A server that rejects structured output gets plain requests; JSON is then read from the text."""
        if self.request_template.pop("response_format", None) is not None:
            log.warning("judge '%s': the server rejected response_format (%s); asking for plain text and "
                        "extracting the JSON from it", self.config.name, reason)
        return {key: value for key, value in body.items() if key != "response_format"}


def read_completion(raw: bytes | str | dict) -> Verdict:
    """Turn one chat.completion body into a verdict: validated fields, or a typed failure with its reason."""
    try:
        completion = orjson.loads(raw) if isinstance(raw, (bytes, str)) else raw
        choice = completion["choices"][0]
        message = choice.get("message") or {}
        usage = completion.get("usage") or {}
        content = message.get("content") or ""
        tokens = {"input_tokens": int(usage.get("prompt_tokens") or 0),
                  "output_tokens": int(usage.get("completion_tokens") or 0)}
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        return Verdict(None, text[:2000], "parse_error", "the server's reply is not a chat completion")
    if message.get("refusal") or choice.get("finish_reason") == "content_filter":
        reason = str(message.get("refusal") or "content filter")[:200]
        return Verdict(None, content or reason, "refused_to_judge", reason, **tokens)
    try:
        fields = validate_fields(extract_json(content))
    except ValueError as problem:
        if choice.get("finish_reason") == "length":
            return Verdict(None, content, "truncated", "the reply hit max_tokens before the JSON ended", **tokens)
        return Verdict(None, content, "parse_error", str(problem), **tokens)
    return Verdict(fields, content, **tokens)
