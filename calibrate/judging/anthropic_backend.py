"""Backend `anthropic`: Claude through Anthropic's Messages API and the official `anthropic` SDK.

Anthropic's OpenAI-compatible endpoint ignores `response_format`, so a judge there can only be read
from free text. Natively, the judgment is a forced tool call whose input schema is the judgment schema
(`output = "strict_tool"` also asks the API to hold the input to that schema exactly; `"json_schema"`
uses structured output in the reply text; `"text"` reads the JSON out of prose). The tool input is then
validated field by field exactly as the OpenAI backend's replies are. Sampling settings are left to the
model unless set (see SAMPLING). The SDK's own retries are off:
429, 529 (overloaded), 5xx and timeouts are retried by the call layer, honouring `retry-after`.

The endpoint is `base_url`, else the SDK's own default: $ANTHROPIC_BASE_URL, else api.anthropic.com.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from calibrate.errors import CalibrateError
from calibrate.judging.base import PairView, Verdict, extract_json, judgment_schema, validate_fields
from calibrate.judging.calls import CallFailed, sdk_failures
from calibrate.judging.remote import REMOTE_KEYS, UNSET, RemoteBackend, check_choice

if TYPE_CHECKING:
    import anthropic

OUTPUTS = ("strict_tool", "tool", "json_schema", "text")
# The Messages API refuses sampling parameters since version 2026-10-21 (the `anthropic` SDK 2.x default,
# which dropped them from its signatures). A judge that sets one, e.g. to reproduce the published
# temperature 0.1, is sent under the last version that accepts them.
SAMPLING = ("temperature", "top_p")
LEGACY_API_VERSION = "2023-06-01"
TOOL_NAME = "record_judgment"
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
        schema = judgment_schema(self.config.rule)
        if output in ("strict_tool", "tool"):
            tool: dict[str, Any] = {"name": TOOL_NAME, "description": TOOL_DESCRIPTION, "input_schema": schema}
            if output == "strict_tool":
                tool["strict"] = True
            body["tools"] = [tool]
            body["tool_choice"] = {"type": "tool", "name": TOOL_NAME}
        elif output == "json_schema":
            body["output_config"] = {"format": {"type": "json_schema", "schema": schema}}
        return body

    @property
    def endpoint(self) -> str:
        """Where the SDK sends requests, as its own default would choose it."""
        return (self.config.settings["base_url"] or os.environ.get("ANTHROPIC_BASE_URL")
                or "https://api.anthropic.com")

    def sdk_client(self) -> anthropic.AsyncAnthropic:
        """A client for this judge's endpoint and key, its own retries off (the call layer retries).
        The SDK is imported here, so offline judges never pay for it."""
        import anthropic

        s = self.config.settings
        return anthropic.AsyncAnthropic(api_key=self.api_key(), base_url=s["base_url"], max_retries=0,
                                        timeout=s["timeout_s"])

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

    async def send(self, body: dict[str, Any]) -> dict[str, Any]:
        import anthropic

        arguments = {key: value for key, value in body.items() if key not in SAMPLING}
        sampling = {key: body[key] for key in SAMPLING if key in body}
        if sampling:  # not in the SDK's signature any more: sent as extra body fields
            arguments.update(extra_body=sampling, extra_headers=self.version_headers())
        with sdk_failures(anthropic):
            message = await self._connect().messages.create(**arguments)
        return message.model_dump(mode="json")

    def read_reply(self, raw: dict[str, Any]) -> Verdict:
        return read_message(raw)

    def without_structured_output(self, body: dict[str, Any], failure: CallFailed) -> dict[str, Any] | None:
        """A model without structured outputs gets the plain forced tool call (still schema-guided)."""
        structured = "output_config" in body or any(tool.get("strict") for tool in body.get("tools", []))
        if not structured:
            return None
        log.warning("judge '%s': the server rejected structured output (%s); using a plain forced tool call and "
                    "validating its input", self.config.name, failure.reason)
        self.request_template = self._request_template("tool")
        return {**self.request_template, "messages": body["messages"],
                **({"system": body["system"]} if "system" in body else {})}


def read_message(raw: Any) -> Verdict:
    """Turn one Messages API reply (a `message` object as JSON) into a verdict: the forced tool call's
    input or the JSON in the text, validated; or a typed failure with its reason."""
    try:
        message = orjson.loads(raw) if isinstance(raw, (bytes, str)) else raw
        blocks = message["content"]
        usage = message.get("usage") or {}
        tokens = {"input_tokens": int(usage.get("input_tokens") or 0),
                  "output_tokens": int(usage.get("output_tokens") or 0)}
        stop = message.get("stop_reason")
        tool_inputs = [b.get("input") for b in blocks if b.get("type") == "tool_use" and b.get("name") == TOOL_NAME]
        text = "".join(str(b.get("text") or "") for b in blocks if b.get("type") == "text")
    except (ValueError, KeyError, TypeError, AttributeError):
        shown = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        return Verdict(None, shown[:2000], "parse_error", "the server's reply is not a Messages API message")
    if stop == "refusal":
        return Verdict(None, text, "refused_to_judge", f"the model declined: {text[:200] or 'stop_reason refusal'}",
                       **tokens)
    shown = orjson.dumps(tool_inputs[0]).decode() if tool_inputs else text
    try:
        fields = validate_fields(tool_inputs[0] if tool_inputs else extract_json(text))
    except ValueError as problem:
        if stop == "max_tokens":
            return Verdict(None, shown, "truncated", "the reply hit max_tokens before the judgment ended", **tokens)
        return Verdict(None, shown, "parse_error", str(problem), **tokens)
    return Verdict(fields, shown, **tokens)
