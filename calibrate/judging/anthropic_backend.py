"""Backend `anthropic`: Claude through Anthropic's Messages API and the official `anthropic` SDK.

Anthropic's OpenAI-compatible endpoint ignores `response_format`, so a judge there can only be read
from free text. Natively, `output = "text"` is the public evaluator's Claude call: no tools, no schema,
the JSON read out of the reply text (the shipped `claude`). `"tool"` makes the judgment a forced tool
call whose input schema is the judgment schema; `"strict_tool"` also asks the API to hold the input to
it exactly and `"json_schema"` uses structured output in the reply text, both without the keywords
Anthropic's structured outputs refuse (STRICT_UNSUPPORTED). Either way the judgment is validated field
by field exactly as the OpenAI backend's replies are. Sampling settings are left to the model unless set
(see SAMPLING). The SDK's own retries are off:
429, 529 (overloaded), 5xx and timeouts are retried by the call layer, honouring `retry-after`.

The endpoint is `base_url`, else the SDK's own default: $ANTHROPIC_BASE_URL, else api.anthropic.com.

Before any judging, the Models API is asked about the model, once (`check_model`): a retired or unknown
model stops the run with one line and nothing else sent; a deprecated one is a warning naming its
retirement date. A server without the Models API (a gateway) only costs a warning.
"""

from __future__ import annotations

import logging
import os
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from calibrate.errors import CalibrateError
from calibrate.judging.base import (
    AMBIGUOUS_REPLY,
    AmbiguousReply,
    PairView,
    Verdict,
    extract_json,
    invalid_usage,
    read_usage,
    validate_fields,
)
from calibrate.judging.calls import CallFailed, Pacer, Reply, call_with_retries, error_message, sdk_failures
from calibrate.judging.remote import REMOTE_KEYS, UNSET, RemoteBackend, check_choice

if TYPE_CHECKING:
    import anthropic

OUTPUTS = ("strict_tool", "tool", "json_schema", "text")
# The Messages API refuses sampling parameters since version 2026-10-21 (the `anthropic` SDK 2.x default,
# which dropped them from its signatures). A judge that sets one, e.g. to reproduce the published
# temperature 0.1, is sent under the last version that accepts them.
SAMPLING = ("temperature", "top_p")
LEGACY_API_VERSION = "2023-06-01"
# Keywords Anthropic's structured outputs (strict tools, output_config) refuse ("For 'integer' type,
# property 'minimum' is not supported"): dropped from the schema there, and only there; the reader still
# holds the score to -2..2.
STRICT_UNSUPPORTED = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "minLength",
                      "maxLength")
TOOL_NAME = "record_judgment"
DEFAULT_ENDPOINT = "https://api.anthropic.com"  # the SDK's own, when neither base_url nor $ANTHROPIC_BASE_URL is set
TOOL_DESCRIPTION = "Record your judgment of the two answers, with every field of the rubric."
log = logging.getLogger("calibrate")


class AnthropicBackend(RemoteBackend):
    CONFIG_KEYS: ClassVar[dict[str, tuple[Any, bool]]] = {
        **REMOTE_KEYS,
        "temperature": (UNSET, True),  # see SAMPLING
        "top_p": (UNSET, True),
        "output": ("strict_tool", True),
        "base_url": (None, False),
        "api_key_env": ("ANTHROPIC_API_KEY", False),
    }
    MAX_TEMPERATURE: ClassVar[float] = 1.0
    BATCH_API: ClassVar[str | None] = "anthropic"

    @classmethod
    def validate_settings(cls, settings: dict[str, Any], path, where: str) -> None:
        super().validate_settings(settings, path, where)
        check_choice(settings, "output", OUTPUTS, where)
        if settings["base_url"] is not None and not isinstance(settings["base_url"], str):
            raise CalibrateError(f"{where}: 'base_url' must be a URL")

    def __init__(self, config) -> None:
        super().__init__(config)
        self.client: anthropic.AsyncAnthropic | None = None
        self.request_template = self._request_template(config.settings["output"])

    def _request_template(self, output: str) -> dict[str, Any]:
        s = self.config.settings
        body: dict[str, Any] = {"model": s["model"], "max_tokens": s["max_tokens"], **self.decoding()}
        if output in ("strict_tool", "tool"):
            tool: dict[str, Any] = {"name": TOOL_NAME, "description": TOOL_DESCRIPTION, "input_schema": self.schema}
            if output == "strict_tool":
                tool.update(input_schema=strict_schema(self.schema), strict=True)
            body["tools"] = [tool]
            body["tool_choice"] = {"type": "tool", "name": TOOL_NAME}
        elif output == "json_schema":
            body["output_config"] = {"format": {"type": "json_schema", "schema": strict_schema(self.schema)}}
        return body

    def schema_sent(self) -> tuple[dict[str, Any] | None, bool]:
        body = self.request_template
        if "output_config" in body:
            return body["output_config"]["format"]["schema"], True
        tools = body.get("tools") or [{}]
        return tools[0].get("input_schema"), bool(tools[0].get("strict"))

    @property
    def endpoint(self) -> str:
        """Where the SDK sends requests, as its own default would choose it."""
        return (self.config.settings["base_url"] or os.environ.get("ANTHROPIC_BASE_URL")
                or DEFAULT_ENDPOINT)

    def sdk_client(self, download: bool = False) -> anthropic.AsyncAnthropic:
        """A client for this judge's endpoint and key, its own retries off (the call layer retries),
        redirects not followed and each reply bounded by `max_reply_bytes` (to `download` a batch result
        file, each line instead: replies.py). The SDK is imported here, so offline judges never pay for it."""
        import anthropic

        from calibrate.judging.replies import sdk_http_client

        s = self.config.settings
        limit = None if download else s["max_reply_bytes"]
        return anthropic.AsyncAnthropic(api_key=self.api_key(), base_url=s["base_url"], max_retries=0,
                                        timeout=s["timeout_s"], http_client=sdk_http_client(anthropic, limit))

    async def check_model(self) -> None:
        """Ask the Models API about the model (one GET /v1/models/{model}, retried as any call): retired
        or unknown stops the run, deprecated warns with the retirement date, active passes. A lookup the
        server cannot answer (no Models API, connection or server errors after the retries) warns once
        and the run goes on; 401/403 stop it as the call layer stops any call."""
        import anthropic

        s = self.config.settings
        model, name, path = s["model"], self.config.name, self.config.path
        client = self.sdk_client()  # its own client: this runs in an event loop of its own

        async def lookup() -> Any:
            with sdk_failures(anthropic):
                try:
                    return await client.models.retrieve(model)
                except anthropic.NotFoundError as error:
                    return error  # read below: an unknown model, or no Models API at all
        try:
            info, _ = await call_with_retries(lookup, self.policy, Pacer(s["requests_per_minute"]),
                                              f"judge '{name}' at {self.endpoint} (Models API)")
        except (CallFailed, anthropic.AnthropicError) as failure:  # the latter: a reply that is no model
            log.warning("judge '%s': could not ask the Models API at %s about model '%s' (%s); judging without "
                        "the lifecycle check", name, self.endpoint, model, getattr(failure, "reason", failure))
            return
        finally:
            await client.close()
        if isinstance(info, anthropic.NotFoundError):
            if unknown_model(info.body):
                raise CalibrateError(f"judge '{name}': model '{model}' is not known to the Models API at "
                                     f"{self.endpoint}; check 'model' in {path}")
            log.warning("judge '%s': %s has no Models API (HTTP 404); judging model '%s' without the lifecycle "
                        "check", name, self.endpoint, model)
            return
        lifecycle = getattr(info, "lifecycle", None)
        if lifecycle == "retired":
            raise CalibrateError(f"judge '{name}': model '{model}' is retired (Anthropic Models API); "
                                 f"choose a current model in {path}")
        if lifecycle == "deprecated":
            log.warning("judge '%s': model '%s' is deprecated (Anthropic Models API), retirement date: %s; "
                        "choose a current model in %s", name, model, retirement(getattr(info, "retires_at", None)),
                        path)
        elif lifecycle != "active":
            log.debug("judge '%s': the Models API reports no lifecycle for model '%s'", name, model)

    def _connect(self) -> anthropic.AsyncAnthropic:
        """One client per event-loop run: its connection pool belongs to the loop."""
        if self.client is None:
            self.client = self.sdk_client()
        return self.client

    async def aclose(self) -> None:
        await super().aclose()
        if self.client is not None:
            await self.client.close()
            self.client = None

    def build_request(self, view: PairView) -> tuple[dict[str, Any], int]:
        """The Messages API body for one view (the system prompt is a top-level field there)."""
        messages, cut = self.prompt.render(view, self.config.settings["max_answer_chars"])
        system = [m["content"] for m in messages if m["role"] == "system"]
        body = {**self.request_template, "messages": [m for m in messages if m["role"] != "system"]}
        if system:
            body["system"] = "\n\n".join(system)
        return body, cut

    def version_headers(self) -> dict[str, str]:
        """The API version to ask for: the SDK's own, unless the judge sets a sampling parameter."""
        return {"anthropic-version": LEGACY_API_VERSION} if any(k in self.request_template for k in SAMPLING) else {}

    async def send(self, body: dict[str, Any]) -> Reply:
        """One Messages API call: the reply's JSON bytes (bounded as read, by the client's hook), and its
        headers for the pacer (anthropic-ratelimit-*)."""
        import anthropic

        arguments = {key: value for key, value in body.items() if key not in SAMPLING}
        sampling = {key: body[key] for key in SAMPLING if key in body}
        if sampling:  # not in the SDK's signature any more: sent as extra body fields
            arguments.update(extra_body=sampling, extra_headers=self.version_headers())
        with sdk_failures(anthropic):
            reply = await self._connect().messages.with_raw_response.create(**arguments)
        return Reply(await reply.read(), reply.headers)  # the JSON itself: read_message validates what it needs

    def read_reply(self, raw: dict[str, Any]) -> Verdict:
        return read_message(raw)

    def without_structured_output(self, body: dict[str, Any], failure: CallFailed) -> dict[str, Any] | None:
        """A model without structured outputs gets the plain forced tool call (still schema-guided)."""
        structured = "output_config" in body or any(tool.get("strict") for tool in body.get("tools", []))
        if not structured or failure.status not in (400, 422):
            return None
        log.warning("judge '%s': the server rejected structured output (%s); using a plain forced tool call and "
                    "validating its input", self.config.name, failure.reason)
        self.request_template = self._request_template("tool")
        return {**self.request_template, "messages": body["messages"],
                **({"system": body["system"]} if "system" in body else {})}


def strict_schema(schema: Any) -> Any:
    """A schema without the keywords Anthropic's structured outputs refuse (STRICT_UNSUPPORTED), at any depth."""
    if isinstance(schema, dict):
        return {key: strict_schema(value) for key, value in schema.items()
                if key not in STRICT_UNSUPPORTED or not isinstance(value, (int, float))}
    if isinstance(schema, list):
        return [strict_schema(item) for item in schema]
    return schema


def unknown_model(body: object) -> bool:
    """Whether a 404 is the Models API saying it does not know a model (an Anthropic `not_found_error`
    about a model), not a server without the endpoint (any other 404)."""
    if not isinstance(body, dict):
        return False
    nested = body.get("error")
    error = nested if isinstance(nested, dict) else body
    return error.get("type") == "not_found_error" and "model" in (error_message(error) or "").lower()


def retirement(retires_at: Any) -> str:
    """A model's scheduled retirement as a date, or that none is announced; a past one is overdue."""
    if isinstance(retires_at, str):
        try:
            retires_at = datetime.fromisoformat(retires_at.replace("Z", "+00:00"))
        except ValueError:
            return retires_at
    if not isinstance(retires_at, datetime):
        return "no date announced"
    day = retires_at.date()
    return f"{day.isoformat()} (overdue)" if day < date.today() else day.isoformat()


def read_message(raw: Any) -> Verdict:
    """Turn one Messages API reply (a `message` object as JSON) into a verdict: the forced tool call's
    input or the JSON in the text, validated; or a typed failure with its reason."""
    try:
        message = orjson.loads(raw) if isinstance(raw, (bytes, str)) else raw
        blocks = message["content"]
        tokens, usage_problem = read_usage(message.get("usage"), "input_tokens", "output_tokens")
        stop = message.get("stop_reason")
        tool_inputs = [b.get("input") for b in blocks if b.get("type") == "tool_use" and b.get("name") == TOOL_NAME]
        text = "".join(str(b.get("text") or "") for b in blocks if b.get("type") == "text")
    except (ValueError, KeyError, TypeError, AttributeError):
        shown = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        return Verdict(None, shown[:2000], "parse_error", "the server's reply is not a Messages API message")
    if usage_problem:
        return invalid_usage(orjson.dumps(tool_inputs).decode() if tool_inputs else text, usage_problem)
    if stop == "refusal":
        return Verdict(None, text, "refused_to_judge", f"the model declined: {text[:200] or 'stop_reason refusal'}",
                       **tokens)
    shown = orjson.dumps(tool_inputs[0] if len(tool_inputs) == 1 else tool_inputs).decode() if tool_inputs else text
    try:
        if len(tool_inputs) > 1:
            raise AmbiguousReply(f"the reply holds {len(tool_inputs)} '{TOOL_NAME}' tool calls; which one is the "
                                 "judge's own cannot be told")
        fields = validate_fields(tool_inputs[0] if tool_inputs else extract_json(text))
    except AmbiguousReply as problem:  # two judgments, or a key given twice: a failure, never a pick
        return Verdict(None, shown, AMBIGUOUS_REPLY, str(problem), **tokens)
    except ValueError as problem:
        if stop == "max_tokens":
            return Verdict(None, shown, "truncated", "the reply hit max_tokens before the judgment ended", **tokens)
        return Verdict(None, shown, "parse_error", str(problem), **tokens)
    return Verdict(fields, shown, **tokens)
