"""Backend `openai`: any OpenAI-compatible chat-completions server, through the official `openai` SDK.

Works with OpenAI, Anthropic's OpenAI-compatible endpoint, vLLM, SGLang, Ollama, llama.cpp server and
LiteLLM. The SDK client owns the endpoint, key and headers; `transport` chooses what carries the
requests: aiohttp (default) or the SDK itself (transport.py says why). A reply is validated field by
field; an invalid one is asked again up to `parse_retries` times, then becomes a typed failure.

Before any judging, a server that lists its models (`GET {base_url}/models`: OpenAI, vLLM, Ollama, ...)
is asked once whether it serves the judge's model (`check_model`); a complete list without it stops
the run with one line. Anything else (no such endpoint, an error, an unfamiliar reply) skips the check.
"""

from __future__ import annotations

import json
import logging
import re
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

import orjson

from calibrate.errors import CalibrateError
from calibrate.judging.base import (
    AMBIGUOUS_REPLY,
    AmbiguousReply,
    FailureKind,
    PairView,
    Verdict,
    extract_json,
    invalid_usage,
    read_usage,
    validate_fields,
)
from calibrate.judging.calls import CallFailed, ConnectionFailure, Reply, StatusError, sdk_failures
from calibrate.judging.configfile import meaning_hash
from calibrate.judging.remote import REMOTE_KEYS, RemoteBackend, check_choice
from calibrate.judging.transport import TRANSPORTS, ChatTransport, make_transport, openai_client

if TYPE_CHECKING:
    import openai

RESPONSE_FORMATS = ("json_schema", "json_object", "none")
# Where a server that refuses a structured-output mode sends the judge next: one step down at a time.
STEP_DOWN = {"json_schema": "json_object", "json_object": "none"}
# How servers say they refuse the structured output asked for, whatever the status (4xx or 5xx):
# llama-cpp-python (500, "Input should be 'text' or 'json_object'"), llama.cpp's llama-server (500,
# 'response_format type must be one of "text" or "json_object", but got: json_schema'), LM Studio (400,
# "'response_format.type' must be 'json_schema' or 'text'"), Ollama (500 "invalid JSON schema in format";
# 400 'invalid format: ... expected "json" or a valid JSON Schema object'), vLLM (400 "The provided JSON
# schema contains features not supported by xgrammar.", "Failed to transform json schema into a grammar").
FORMAT_REFUSAL = re.compile(
    r"(response_format|json_schema|json[ _]object|guided_json|json schema|\bgrammar\b|xgrammar|\bformat\b)"
    r".{0,200}?(must be|should be|\binvalid\b|unsupported|not supported|failed to|expected|unknown|not allowed)"
    r"|(must be|should be|\binvalid\b|unsupported|not supported|failed to|expected|unknown|not allowed)"
    r".{0,200}?(response_format|json_schema|json[ _]object|guided_json|json schema|xgrammar|\bformat\b)"
    r"|input should be 'text'",
    re.IGNORECASE | re.DOTALL)
# What a request in json_object mode adds to the prompt when the judge stepped down from json_schema: the
# schema the server would not enforce, so the model still knows the fields and types.
SCHEMA_NOTE = "Reply with one JSON object only, following this JSON schema:\n"
# Servers whose model list does not name what a request may ask for: Azure OpenAI takes deployment
# names, Anthropic's OpenAI-compatible endpoint takes aliases its Models API does not list.
UNLISTED_MODEL_HOSTS = ("azure.com", "anthropic.com")
SHOWN_MODELS = 10
log = logging.getLogger("calibrate")


class OpenAIBackend(RemoteBackend):
    # key -> (default, changes the judgment?)
    CONFIG_KEYS: ClassVar[dict[str, tuple[Any, bool]]] = {
        **REMOTE_KEYS,
        "seed": (None, True),
        "response_format": ("json_schema", True),
        "base_url": ("https://api.openai.com/v1", False),
        "api_key_env": ("OPENAI_API_KEY", False),
        "transport": ("aiohttp", False),
    }
    BATCH_API: ClassVar[str | None] = "openai"

    @classmethod
    def validate_settings(cls, settings: dict[str, Any], path, where: str) -> None:
        super().validate_settings(settings, path, where)
        check_choice(settings, "transport", TRANSPORTS, where)
        check_choice(settings, "response_format", RESPONSE_FORMATS, where)

    def __init__(self, config) -> None:
        super().__init__(config)
        self.transport: ChatTransport | None = None
        self.mode: str = config.settings["response_format"]  # steps down once per run when the server refuses it
        self.schema_in_prompt = False  # set when stepping down from json_schema: the schema goes in the prompt
        self.request_template = self._request_template()

    @property
    def response_format(self) -> str | None:
        return self.mode

    def judgment_hash(self, response_format: str | None) -> str:
        asked = self.config.settings["response_format"]
        if response_format in (None, asked):
            return self.config.config_hash
        return meaning_hash({**self.config.meaning, "response_format": response_format,
                             "response_format_refused": asked})

    def _request_template(self) -> dict[str, Any]:
        s = self.config.settings
        body: dict[str, Any] = {"model": s["model"], "max_tokens": s["max_tokens"], **self.decoding()}
        if s["seed"] is not None:
            body["seed"] = s["seed"]
        if self.mode == "json_schema":  # the published schema, without `strict`, as published
            body["response_format"] = {"type": "json_schema", "json_schema": {
                "name": "valbench_judgment", "schema": self.schema}}
        elif self.mode == "json_object":
            body["response_format"] = {"type": "json_object"}
        return body

    @property
    def endpoint(self) -> str:
        return self.config.settings["base_url"]

    def schema_sent(self) -> tuple[dict[str, Any] | None, bool]:
        form = self.request_template.get("response_format", {}).get("json_schema")
        return (form["schema"], bool(form.get("strict"))) if form else (None, False)

    def sdk_client(self, download: bool = False) -> openai.AsyncOpenAI:
        """A client for this judge's endpoint and key (batch jobs use it; judging goes by `transport`): each
        reply bounded by `max_reply_bytes`, or, to `download` a batch result file, each line instead."""
        s = self.config.settings
        return openai_client(self.api_key(), s["base_url"], s["timeout_s"], None if download else s["max_reply_bytes"])

    async def check_model(self) -> None:
        """Whether the server serves the judge's model, from its model list (one GET, not retried): a
        complete list without the model stops the run, naming what the server does serve. No list (404,
        405, any error), a partial or empty one, or a server whose list names no request models (Azure,
        Anthropic): no check. The request goes to `base_url` only, redirects not followed."""
        s = self.config.settings
        model, base_url = s["model"], s["base_url"]
        host = (urlsplit(base_url).hostname or "").lower()
        if any(host == known or host.endswith("." + known) for known in UNLISTED_MODEL_HOSTS):
            return
        served = await self._served_models()
        if served is None or matches(model, served):
            return
        more = f", ... ({len(served)} in all)" if len(served) > SHOWN_MODELS else ""
        shown = ", ".join(served[:SHOWN_MODELS]) + more
        raise CalibrateError(f"judge '{self.config.name}': model '{model}' is not served at {base_url}, which "
                             f"serves {shown}; check 'model' in {self.config.path}")

    async def _served_models(self) -> list[str] | None:
        """The model ids the server lists, or None when it lists none we can rely on."""
        import openai

        client = self.sdk_client()
        try:
            with sdk_failures(openai):
                listing = await client.get("/models", cast_to=object)
        except (StatusError, ConnectionFailure, openai.OpenAIError) as problem:
            log.debug("judge '%s': no model list at %s (%s); the model is not checked", self.config.name,
                      self.endpoint, problem)
            return None
        finally:
            await client.close()
        page = listing if isinstance(listing, dict) else {}
        data = page.get("data")
        items = data if isinstance(data, list) else []
        ids = [item.get("id") if isinstance(item, dict) else None for item in items]
        names = [i for i in ids if isinstance(i, str) and "*" not in i]  # "*": wildcard routes
        complete = bool(ids) and page.get("has_more") is not True  # a first page is not the whole list
        if not complete or len(names) < len(ids):
            log.debug("judge '%s': the model list at %s is not one to check against", self.config.name,
                      self.endpoint)
            return None
        return names

    def _connect(self) -> ChatTransport:
        """One transport per event-loop run: aiohttp sessions are bound to the loop that made them."""
        if self.transport is None:
            s = self.config.settings
            self.transport = make_transport(s["transport"], self.api_key(), s["base_url"], self.config.concurrency,
                                            s["timeout_s"], s["max_reply_bytes"])
        return self.transport

    async def aclose(self) -> None:
        await super().aclose()
        if self.transport is not None:
            await self.transport.close()
            self.transport = None

    def build_request(self, view: PairView) -> tuple[dict[str, Any], int]:
        """The chat-completions body for one view, and how many answer characters were cut."""
        messages, cut = self.prompt.render(view, self.config.settings["max_answer_chars"])
        return {**self.request_template, "messages": self._with_schema_note(messages)}, cut

    def _with_schema_note(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The messages, with the schema appended to the last user message once the judge stepped down
        from json_schema (appended, not a message of its own: some chat templates refuse a late system turn)."""
        if not self.schema_in_prompt or any(SCHEMA_NOTE in str(m.get("content")) for m in messages):
            return messages
        last = max(i for i, message in enumerate(messages) if message.get("role") == "user")
        note = SCHEMA_NOTE + json.dumps(self.schema, ensure_ascii=False)
        return [{**m, "content": f"{m['content']}\n\n{note}"} if i == last else m for i, m in enumerate(messages)]

    async def send(self, body: dict[str, Any]) -> Reply:
        try:
            return await self._connect().post(body)
        except StatusError as error:  # a refusal of the structured output is no server trouble: never retried
            if "response_format" in body and FORMAT_REFUSAL.search(f"{error.detail or ''} {error}"):
                error.kind = FailureKind.FORMAT_REFUSED
            raise

    def read_reply(self, raw: bytes) -> Verdict:
        return read_completion(raw)

    def mode_of(self, body: dict[str, Any]) -> str:
        return body.get("response_format", {}).get("type", "none")

    def without_structured_output(self, body: dict[str, Any], failure: CallFailed) -> dict[str, Any] | None:
        """A server that refuses the structured output asked for gets the next plainer mode, once per run:
        json_schema -> json_object (the schema then in the prompt) -> none (JSON read from the text)."""
        sent = self.mode_of(body)
        if failure.kind is not FailureKind.FORMAT_REFUSED or sent not in STEP_DOWN:
            return None
        if self.mode == sent:  # the first refusal of this mode (requests in flight meet it too)
            self.mode = STEP_DOWN[sent]
            self.schema_in_prompt = self.schema_in_prompt or sent == "json_schema"
            self.request_template = self._request_template()
            log.warning("judge %s: the server refused %s; using %s (%s)", self.config.name, sent, self.mode,
                        " ".join((failure.detail or failure.reason).split())[:200])
        return {**self.request_template, "messages": self._with_schema_note(body["messages"])}


def matches(model: str, served: list[str]) -> bool:
    """Whether a model name is among the served ids, as servers resolve names: exactly, without a
    "models/" prefix (Gemini lists "models/..."), untagged as ":latest" (Ollama), or as a listed model
    with a routing suffix (OpenRouter's "...:nitro")."""
    def bare(name: str) -> str:
        return name.removeprefix("models/")

    def tagged(name: str) -> str:
        return bare(name) if ":" in bare(name) else bare(name) + ":latest"

    listed = {bare(name) for name in served}
    return tagged(model) in {tagged(name) for name in served} or bare(model).rsplit(":", 1)[0] in listed


def read_completion(raw: bytes | str | dict) -> Verdict:
    """Turn one chat.completion body into a verdict: validated fields, or a typed failure with its reason."""
    try:
        completion = orjson.loads(raw) if isinstance(raw, (bytes, str)) else raw
        choice = completion["choices"][0]
        message = choice.get("message") or {}
        content = message.get("content") or ""
        tokens, usage_problem = read_usage(completion.get("usage"), "prompt_tokens", "completion_tokens")
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        return Verdict(None, text[:2000], "parse_error", "the server's reply is not a chat completion")
    if usage_problem:
        return invalid_usage(str(content), usage_problem)
    if message.get("refusal") or choice.get("finish_reason") == "content_filter":
        reason = str(message.get("refusal") or "content filter")[:200]
        return Verdict(None, content or reason, "refused_to_judge", reason, **tokens)
    try:
        fields = validate_fields(extract_json(content))
    except AmbiguousReply as problem:  # two judgments, or a key given twice: a failure, never a pick
        return Verdict(None, content, AMBIGUOUS_REPLY, str(problem), **tokens)
    except ValueError as problem:
        if choice.get("finish_reason") == "length":
            return Verdict(None, content, "truncated", "the reply hit max_tokens before the JSON ended", **tokens)
        return Verdict(None, content, "parse_error", str(problem), **tokens)
    return Verdict(fields, content, **tokens)
