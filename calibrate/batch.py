"""Offline batch judging: export requests as an OpenAI Batch API JSONL file, import the results.

The request file is what OpenAI's Batch API and vLLM's offline `run_batch` entry point both read;
their output files share one format. Each request's `custom_id` carries the judge config hash, the
item key, the order and the answer characters cut, so results load into the judgment cache with the
same validation as live calls, and a result from another judge config is refused. A batch result
has no per-request latency; it is stored as unknown, not as zero.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from calibrate.data import Pair
from calibrate.errors import CalibrateError
from calibrate.judging.backends import make_backend
from calibrate.judging.base import ORDERS, Judgment, Verdict, view_of
from calibrate.judging.config import JudgeConfig
from calibrate.judging.openai_backend import OpenAIBackend, read_completion
from calibrate.judging.runner import split_cached
from calibrate.store import JudgmentStore

ENDPOINT = "/v1/chat/completions"


def custom_id(config_hash: str, item_key: str, order: str, cut: int) -> str:
    return f"{config_hash}.{item_key}.{order}.{cut}"


def parse_custom_id(value: object, where: str) -> tuple[str, str, str, int]:
    parts = value.split(".") if isinstance(value, str) else []
    if len(parts) != 4 or parts[2] not in ORDERS or not parts[3].isdigit():
        raise CalibrateError(f"{where}: custom_id {value!r} was not written by `calibrate batch export`")
    return parts[0], parts[1], parts[2], int(parts[3])


def batch_backend(config: JudgeConfig) -> OpenAIBackend:
    backend = make_backend(config)
    if not isinstance(backend, OpenAIBackend):
        raise CalibrateError(f"judge '{config.name}': batch files need an 'openai' backend, not '{config.backend}'")
    return backend


def export_requests(config: JudgeConfig, pairs: list[Pair], orders: tuple[str, ...], store: JudgmentStore,
                    out_file: Path) -> dict[str, int]:
    """Write one request line per (item, order) not already in the cache; returns counts."""
    backend = batch_backend(config)
    wanted, cached = split_cached(store, config.config_hash, pairs, orders)
    written = 0
    try:
        with out_file.open("w", encoding="utf-8") as handle:
            for (item_key, order, repeat), pair in wanted.items():
                if (item_key, order, repeat) in cached:
                    continue
                body, cut = backend.build_request(view_of(pair, order))
                line = {"custom_id": custom_id(config.config_hash, item_key, order, cut), "method": "POST",
                        "url": ENDPOINT, "body": body}
                handle.write(json.dumps(line, ensure_ascii=False) + "\n")
                written += 1
    except OSError as error:
        raise CalibrateError(f"cannot write {out_file}: {error.strerror}") from None
    return {"requests": written, "already_cached": len(cached), "items": len(wanted)}


@dataclass
class ImportSummary:
    imported: int = 0
    already_cached: int = 0
    failed: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"imported": self.imported, "already_cached": self.already_cached, "failed": self.failed}


def import_results(config: JudgeConfig, results_file: Path, store: JudgmentStore) -> ImportSummary:
    """Validate every result line and store it: successes as cached judgments, the rest as typed failures."""
    try:
        lines = results_file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise CalibrateError(f"cannot read {results_file}: {error}") from None
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{results_file}, line {number}"
        record = json_object_line(line, where)
        config_hash, item_key, order, cut = parse_custom_id(record.get("custom_id"), where)
        if config_hash != config.config_hash:
            raise CalibrateError(f"{where}: result belongs to judge config {config_hash}, not "
                                 f"'{config.name}' ({config.config_hash})")
        records.append((record, item_key, order, cut))
    summary = ImportSummary()
    cached = store.get_many(config.config_hash, [(item, order, 0) for _, item, order, _ in records])
    for record, item_key, order, cut in records:
        if (item_key, order, 0) in cached:
            summary.already_cached += 1
            continue
        verdict = verdict_of_result(record)
        store.put(Judgment(
            judge_name=config.name, config_hash=config.config_hash, item_key=item_key, order=order,
            parse_status=verdict.parse_status, failure_reason=verdict.failure_reason, raw_output=verdict.raw_output,
            latency_s=None, input_tokens=verdict.input_tokens, output_tokens=verdict.output_tokens, attempts=1,
            truncated_chars=cut, batch_id=f"file:{results_file.name}", fields=verdict.fields or {},
        ))
        if verdict.parse_status == "ok":
            summary.imported += 1
        else:
            summary.failed[verdict.parse_status] = summary.failed.get(verdict.parse_status, 0) + 1
    return summary


def json_object_line(line: str, where: str) -> dict:
    """One line of a Batch API results file, which must be a JSON object."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise CalibrateError(f"{where}: not JSON ({error.msg})") from None
    if not isinstance(record, dict):
        raise CalibrateError(f"{where}: expected a JSON object")
    return record


def verdict_of_result(record: dict) -> Verdict:
    """One line of a Batch API output or error file as a verdict (a failed request is an api_error)."""
    response = record.get("response") or {}
    if record.get("error") or response.get("status_code") != 200:
        error = record.get("error") or (response.get("body") or {}).get("error") or {}
        message = error.get("message") if isinstance(error, dict) else str(error)
        return Verdict(None, json.dumps(record)[:2000], "api_error",
                       f"batch result: HTTP {response.get('status_code')}: {str(message)[:200]}")
    return read_completion(response.get("body") or {})
