"""Batch files: requests as an OpenAI Batch API JSONL file, and reading the results back.

The request file is what OpenAI's Batch API and vLLM's offline `run_batch` entry point both read;
their output files share one format. Each request's `custom_id` carries the judge config hash, the
item key, the order and the answer characters cut, so results load into the judgment cache with the
same validation as live calls, and a result from another judge config is refused. A batch result
has no per-request latency; it is stored as unknown, not as zero. Result files are read line by line,
each line bounded by the judge's `max_reply_bytes` and an envelope: a longer one is its request's
`reply_too_large` failure, never read into memory.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

from calibrate.errors import CalibrateError
from calibrate.judging.base import ORDERS, FailureKind, Judgment, Verdict, call_failure, status_kind
from calibrate.judging.config import JudgeConfig
from calibrate.judging.openai_backend import OpenAIBackend, read_completion
from calibrate.judging.registry import make_backend

ENDPOINT = "/v1/chat/completions"
# OpenAI's error codes of the requests a batch never ran.
UNANSWERED_CODES = ("batch_expired", "batch_cancelled")
# A result line's room beyond the reply it carries (custom_id, ids, status): its bound is max_reply_bytes + this.
RESULT_ENVELOPE_BYTES = 1 << 16
CUSTOM_ID_FIELD = re.compile(rb'"custom_id"\s*:\s*"([^"\\]{1,200})"')
READ_BYTES = 1 << 16


def custom_id(config_hash: str, item_key: str, order: str, cut: int) -> str:
    return f"{config_hash}.{item_key}.{order}.{cut}"


def parse_custom_id(value: object, where: str) -> tuple[str, str, str, int]:
    parts = value.split(".") if isinstance(value, str) else []
    if len(parts) != 4 or parts[2] not in ORDERS or not parts[3].isdigit():
        raise CalibrateError(f"{where}: custom_id {value!r} was not written by `calibrate batch export`")
    return parts[0], parts[1], parts[2], int(parts[3])


def request_line(config_hash: str, item_key: str, order: str, body: dict, cut: int) -> str:
    """One line of a request file, as OpenAI's Batch API and vLLM's run_batch read it."""
    line = {"custom_id": custom_id(config_hash, item_key, order, cut), "method": "POST", "url": ENDPOINT, "body": body}
    return json.dumps(line, ensure_ascii=False) + "\n"


def batch_backend(config: JudgeConfig) -> OpenAIBackend:
    backend = make_backend(config)
    if not isinstance(backend, OpenAIBackend):
        raise CalibrateError(f"judge '{config.name}': batch files need an 'openai' backend, not '{config.backend}'")
    return backend


def verdict_of_result(record: dict) -> Verdict:
    """One line of a Batch API output or error file as a verdict (a failed request is an api_error)."""
    response = record.get("response") or {}
    if record.get("error") or response.get("status_code") != 200:
        error = record.get("error") or (response.get("body") or {}).get("error") or {}
        message = error.get("message") if isinstance(error, dict) else str(error)
        return call_failure(result_kind(response.get("status_code"), error),
                            f"batch result: HTTP {response.get('status_code')}: {str(message)[:200]}",
                            json.dumps(record)[:2000])
    return read_completion(response.get("body") or {})


def result_kind(status: object, error: object) -> FailureKind:
    """The kind of a failed batch request: from its HTTP status; a request the batch never ran
    (expired, cancelled: OpenAI's `batch_expired`, `batch_cancelled`) is UNANSWERED, any other
    failure without a status the provider's own (SERVER_ERROR)."""
    if isinstance(status, int) and not isinstance(status, bool) and status >= 400:
        return status_kind(status)
    code = error.get("code") if isinstance(error, dict) else None
    return FailureKind.UNANSWERED if code in UNANSWERED_CODES else FailureKind.SERVER_ERROR


def batch_judgment(config: JudgeConfig, item_key: str, order: str, verdict: Verdict, cut: int,
                   batch_id: str) -> Judgment:
    """A batch result as a judgment: charged at batch prices (`batch_id`), its latency unknown."""
    return Judgment(
        judge_name=config.name, config_hash=config.config_hash, item_key=item_key, order=order,
        parse_status=verdict.parse_status, failure_reason=verdict.failure_reason, raw_output=verdict.raw_output,
        latency_s=None, input_tokens=verdict.input_tokens, output_tokens=verdict.output_tokens, attempts=1,
        truncated_chars=cut, batch_id=batch_id, fields=verdict.fields or {}, failure_kind=verdict.failure_kind)


def line_limit(config: JudgeConfig) -> int:
    """The most bytes a result line of this judge may hold."""
    return config.settings["max_reply_bytes"] + RESULT_ENVELOPE_BYTES


def result_lines(path: Path, limit: int) -> Iterator[tuple[int, bytes, bool]]:
    """(line number, line, whole) of every non-blank line of a result file: a line longer than `limit`
    bytes comes as its first `limit` bytes and whole=False, the rest skipped unread into memory."""
    try:
        with path.open("rb") as file:
            for number, line in enumerate(iter(lambda: file.readline(limit + 1), b""), start=1):
                whole = len(line) <= limit or line.endswith(b"\n")
                if not whole:
                    line = line[:limit]
                    rest = file.readline(READ_BYTES)
                    while rest and not rest.endswith(b"\n"):
                        rest = file.readline(READ_BYTES)
                if line.strip():
                    yield number, line, whole
    except OSError as error:
        raise CalibrateError(f"cannot read {path}: {error.strerror}") from None


def text_of(line: bytes, where: str) -> str:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        raise CalibrateError(f"{where} is not UTF-8 text") from None


def too_large_result(line: bytes, where: str) -> tuple[str, Verdict]:
    """A result line past its bound, as its request's typed failure (`reply_too_large`), named by the
    custom_id near its start (both providers write it first)."""
    found = CUSTOM_ID_FIELD.search(line[:READ_BYTES])
    if found is None:
        raise CalibrateError(f"{where}: a result line longer than {len(line):,} bytes names no custom_id near its "
                             "start; it is not read")
    return found.group(1).decode("utf-8", "replace"), call_failure(
        FailureKind.REPLY_TOO_LARGE, f"batch result: longer than {len(line):,} bytes (max_reply_bytes); not read")
