"""`calibrate respond`: generate a model's answers to both questions of every benchmark pair.

Each question (`for_question`, `against_question`) is asked in a fresh context: the model config's
system prompt (by default the published one) and the question as the only user message, with the
published decoding settings (temperature 0.1, top_p 0.9). Requests go through the judges' call layer
(calibrate.judging.transport and .calls): bounded concurrency, an optional request-rate limit,
retries with backoff honouring Retry-After, typed failures, and a 401/403/404 stops the run.

Answers are cached in the SQLite cache (`ResponseStore`, its own tables in the judgment cache file),
keyed on the model config's meaning hash (model, system prompt, decoding settings, extra body) and
the question text; transport settings (URL, key variable, concurrency, timeouts, retries, prices)
are not in the key. Answers are committed as they arrive (those finishing in one event-loop turn share
a transaction), so a killed run resumes asking only for what is missing; equal questions are asked once.

Answer statuses:
- `ok`: the model answered (finish_reason `stop`, or anything else than the cases below). When the
  API puts a model's own refusal in `message.refusal` with no content, that refusal text is the answer:
  a refusal is something the benchmark measures, not a failure.
- `truncated`: the answer hit max_tokens (finish_reason `length`) with some text. Kept, cached and
  written, flagged in `<side>_response_status` and counted: asking again with the same settings would
  give the same cut answer; raise `max_tokens` (a new config hash) to ask again.
Failures (never cached as answers, logged in the cache's failure log, asked again by the next run):
- `api_error`: the call still failed after its retries (5xx, 429, timeouts), or the server refused
  this one request (e.g. 400).
- `bad_reply`: the reply is not a chat completion.
- `empty`: no text (e.g. a reasoning model that spent max_tokens before answering).
- `content_filter`: the provider's content filter blocked the answer (finish_reason `content_filter`).

An answer that still failed after its retries is written as the published placeholder "No response"
(its status column says why), so `score` counts the pair as `missing_answer` and never judges it; the
failures are listed in `<out>/<name>.failures.jsonl` with their reasons, and the summary counts them.
"""


from __future__ import annotations

import json
import math
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from calibrate.data.prompts import BENCHMARK_HUB_ID, DEFAULT_SPLIT, PromptRows, load_prompts
from calibrate.errors import CalibrateError
from calibrate.judging.estimate import SpendBudget
from calibrate.judging.models import ModelConfig, load_model_config
from calibrate.judging.progress import ProgressCallback
from calibrate.judging.responder import USABLE_STATUSES, Responder, ask_all, question_key
from calibrate.judging.runner import run_sync
from calibrate.judging.trust import trusting
from calibrate.records import Record
from calibrate.store.responses import ResponseStore
from calibrate.store.sqlite import cache_path
from calibrate.workflows.plan import ProbeQuote, RunPlan, plan_answers, spend_budget

DEFAULT_OUT = "responses"
SIDES = ("for", "against")
# Columns respond writes; a source that already has them (e.g. an older response dataset) gets them replaced.
WRITTEN_COLUMNS = ("for_prompt", "for_response", "against_prompt", "against_response", "model",
                   "for_response_status", "against_response_status", "for_response_reasoning",
                   "against_response_reasoning")
# What the published response pipeline stores for a generation that failed; `score` counts such a pair
# as `missing_answer`, never judges it.
FAILED_ANSWER = "No response"


@dataclass(frozen=True, kw_only=True)
class RespondSummary(Record):
    """What a `respond` run did: the model and source, pairs and answers (generated, reused, failed by
    reason, truncated), requests, tokens and cost, and the files written (None until written)."""

    model: str
    model_id: str
    config_hash: str
    config_path: str
    source: str
    split: str
    files: list[str]
    limit: int | None
    seed: int | None
    source_rows: int
    pairs: int
    pairs_written: int
    pairs_with_failed_answers: int
    answers: int
    questions: int
    generated: int
    reused: int
    failed: int
    failed_by_reason: dict[str, int]
    failed_by_kind: dict[str, int]
    truncated: int
    requests: int
    input_tokens: int
    output_tokens: int
    cost_usd_this_run: float
    cost_usd: float
    output: str | None
    failures_file: str | None
    cache: str
    elapsed_s: float | None


@dataclass(frozen=True)
class AnswerFailure(Record):
    """An answer that failed after its retries: the pair and side, the question, why, and how many tries."""

    id: int
    side: str
    question: str
    status: str
    reason: str | None
    attempts: int


@dataclass(frozen=True)
class Provenance(Record):
    """How the answers were made (the model config's settings, the source), stored in the parquet file's
    metadata under `calibrate_respond`."""

    config: dict[str, Any]
    source: str
    split: str
    files: list[str]
    pairs: int
    pairs_written: int
    created_at: str


@dataclass
class RespondResult:
    """What `respond` produced: the response dataset (every pair, as `score` reads it; an answer whose
    generation failed holds the published placeholder "No response" and its failure status), the
    answers that failed with their reasons, the run's summary, and the files written (none unless
    `out` was given, or until `write`)."""

    model: str
    records: list[dict[str, Any]]
    columns: list[str]
    failures: list[AnswerFailure]
    provenance: Provenance
    summary: RespondSummary
    paths: dict[str, Path] = field(default_factory=dict)

    @property
    def dataset(self) -> pd.DataFrame:
        return pd.DataFrame.from_records(self.records, columns=self.columns)

    def write(self, out_dir: Path | str) -> dict[str, Path]:
        """Write `<model>.parquet` (and `<model>.failures.jsonl` when answers failed) into `out_dir`."""
        folder = Path(out_dir).expanduser()
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise CalibrateError(f"out: cannot create {folder} ({error.strerror})", ("out",)) from None
        paths = {"output": folder / f"{self.model}.parquet"}
        _write_parquet(self.records, self.columns, paths["output"], self.provenance)
        failures_path = folder / f"{self.model}.failures.jsonl"
        if self.failures:
            paths["failures"] = failures_path
            _atomic_write(failures_path, "".join(json.dumps(f.to_dict(), ensure_ascii=False) + "\n"
                                                 for f in self.failures).encode())
        elif failures_path.exists():
            failures_path.unlink()  # a list from an earlier run whose failures are now answered
        self.paths = paths
        self.summary = replace(self.summary, output=str(paths["output"]),
                               failures_file=str(failures_path) if self.failures else None)
        return paths


def _questions(rows: PromptRows) -> dict[str, str]:
    """Every distinct question of the rows, by its cache key (equal questions are asked once)."""
    return {question_key(row[f"{side}_question"]): row[f"{side}_question"] for row in rows.rows for side in SIDES}


def plan_respond(
    model: str,
    *,
    prompts: str = BENCHMARK_HUB_ID,
    split: str = DEFAULT_SPLIT,
    limit: int | None = None,
    seed: int | None = None,
    cache: str | Path | None = None,
    trust: bool = False,
    probe: int = 0,
    max_cost: float | SpendBudget | None = None,
    progress: ProgressCallback | None = None,
    on_quote: Callable[[list[ProbeQuote]], None] | None = None,
) -> RunPlan:
    """What `respond` with these arguments would send and cost (requests, tokens, cost, time), sending
    nothing and needing no key: questions the cache holds an answer to are left out. With `probe` N, N of
    the run's questions are first asked as `respond` asks them (needing the key; their answers cached, so
    the run reuses them) and the plan takes its latency and tokens from them: `on_quote` gets their price
    before they are sent, `max_cost` caps them, `progress` shows them; `RunPlan.probes` holds what they
    measured."""
    with trusting(trust):
        config = load_model_config(model)
        return plan_answers(config, _questions(load_prompts(prompts, split, limit, seed)), cache, probe=probe,
                            budget=spend_budget(max_cost), progress=progress, on_quote=on_quote)


def respond(
    model: str,
    *,
    prompts: str = BENCHMARK_HUB_ID,
    split: str = DEFAULT_SPLIT,
    limit: int | None = None,
    out: str | Path | None = None,
    cache: str | Path | None = None,
    seed: int | None = None,
    progress: ProgressCallback | None = None,
    max_cost: float | SpendBudget | None = None,
    trust: bool = False,
) -> RespondResult:
    """Answer both questions of every selected pair with one model.

    `model`: a config name (looked up in $CALIBRATE_MODELS_DIR, ./models, the bundled models)
    or a path to a .toml. `prompts`: a hub id (default: the benchmark), a file or a folder; `split`
    picks the split of a hub id, hub-layout folder or saved DatasetDict. `limit`: at most N pairs of
    the response dataset: the first N, or a seeded random N with `seed`. `out`: a folder for
    `<name>.parquet` (None: write nothing).
    `cache`: the SQLite cache (default $CALIBRATE_CACHE, else ~/.cache/calibrate/judgments.sqlite3).
    Raises CalibrateError (one line) for bad input, before any request when it can be known then.
    `max_cost`: stop before the spend (USD, list price) would pass it (answers so far are cached);
    `progress`: receives the answering's `JudgingProgress` events.
    `plan_respond` says what a run would cost without sending anything.
    """
    with trusting(trust):
        started = time.perf_counter()
        budget = spend_budget(max_cost)
        config = load_model_config(model)
        config.api_key()  # a missing key fails before any work
        rows = load_prompts(prompts, split, limit, seed)
        questions = _questions(rows)
        if out is not None:
            out = Path(out).expanduser()
            try:  # before any request, so a bad folder costs nothing
                out.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise CalibrateError(f"out: cannot create {out} ({error.strerror})", ("out",)) from None

        cache_file = cache_path(cache)
        with ResponseStore(cache_file) as store:
            cached = store.get_many(config.config_hash, questions)
            todo = [(key, question) for key, question in questions.items() if key not in cached]
            fresh = run_sync(ask_all(Responder(config), todo, store, progress, budget)) if todo else {}
        answers = {**cached, **fresh}

        records, columns, failures = _dataset(config, rows, answers)
        new_failures = [r for r in fresh.values() if r["status"] not in USABLE_STATUSES]
        used = {key: answers[key] for key in questions if answers[key]["status"] in USABLE_STATUSES}
        by_reason: dict[str, int] = {}
        for record in new_failures:
            by_reason[record["status"]] = by_reason.get(record["status"], 0) + 1
        input_tokens = sum(r["input_tokens"] for r in fresh.values())
        output_tokens = sum(r["output_tokens"] for r in fresh.values())
        summary = RespondSummary(
            model=config.name, model_id=config.model, config_hash=config.config_hash,
            config_path=str(config.path), source=prompts, split=split, files=rows.files,
            limit=limit, seed=seed if limit is not None else None, source_rows=rows.total_rows,
            pairs=len(rows.rows), pairs_written=len(records),
            pairs_with_failed_answers=len({failure.id for failure in failures}),
            answers=2 * len(rows.rows), questions=len(questions),
            generated=len(fresh) - len(new_failures), reused=len(cached), failed=len(new_failures),
            failed_by_reason=dict(sorted(by_reason.items())),
            failed_by_kind=dict(sorted(Counter(record["failure_kind"] for record in new_failures).items())),
            truncated=sum(r["status"] == "truncated" for r in used.values()),
            requests=sum(r["attempts"] for r in fresh.values()),
            input_tokens=input_tokens, output_tokens=output_tokens,
            cost_usd_this_run=config.cost_usd(input_tokens, output_tokens),
            cost_usd=config.cost_usd(sum(r["input_tokens"] for r in used.values()),
                                     sum(r["output_tokens"] for r in used.values())),
            output=None, failures_file=None,
            cache=str(cache_file), elapsed_s=None,
        )
        provenance = Provenance(config=config.settings(), source=rows.source, split=rows.split, files=rows.files,
                                pairs=len(rows.rows), pairs_written=len(records),
                                created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        result = RespondResult(config.name, records, columns, failures, provenance, summary)
        if out is not None:
            result.write(out)
        result.summary = replace(result.summary, elapsed_s=round(time.perf_counter() - started, 3))
        return result


def _dataset(config: ModelConfig, rows: PromptRows,
             answers: dict[str, dict]) -> tuple[list[dict], list[str], list[AnswerFailure]]:
    """Every pair as a record (a failed answer as the published placeholder, so that `score` counts the
    pair as `missing_answer`), the columns, and the failed answers with their reasons."""
    kept_columns = [c for c in rows.columns if c not in WRITTEN_COLUMNS]
    records: list[dict] = []
    failures: list[AnswerFailure] = []
    with_reasoning = any(a.get("reasoning") for a in answers.values() if a["status"] in USABLE_STATUSES)
    for row in rows.rows:
        side_answers = {side: answers[question_key(row[f"{side}_question"])] for side in SIDES}
        failures.extend(AnswerFailure(row["id"], side, row[f"{side}_question"], a["status"], a["failure_reason"],
                                      a["attempts"])
                        for side, a in side_answers.items() if a["status"] not in USABLE_STATUSES)
        record = {column: row.get(column) for column in kept_columns}
        for side, answer in side_answers.items():
            usable = answer["status"] in USABLE_STATUSES
            record[f"{side}_prompt"] = config.messages(row[f"{side}_question"])
            record[f"{side}_response"] = {"role": "assistant",
                                          "content": answer["content"] if usable else FAILED_ANSWER}
        record["model"] = config.model
        for side, answer in side_answers.items():
            record[f"{side}_response_status"] = answer["status"]
        if with_reasoning:
            for side, answer in side_answers.items():
                record[f"{side}_response_reasoning"] = answer.get("reasoning")
        records.append(record)
    columns = [*kept_columns, "for_prompt", "for_response", "against_prompt", "against_response", "model",
               "for_response_status", "against_response_status",
               *(("for_response_reasoning", "against_response_reasoning") if with_reasoning else ())]
    return records, columns, failures


def _write_parquet(records: list[dict], columns: list[str], output: Path, provenance: Provenance) -> None:
    """The response dataset as one parquet file (written aside, then moved into place), with how it
    was made in the file's metadata (key `calibrate_respond`)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    frame = pd.DataFrame.from_records(records, columns=columns)
    for column in frame.columns:  # a carried-through column of mixed types becomes text (non-strings as JSON)
        if frame[column].dtype == object:
            try:
                pa.array(frame[column], from_pandas=True)
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
                frame[column] = [v if v is None or isinstance(v, str) else
                                 None if isinstance(v, float) and math.isnan(v) else
                                 json.dumps(v, ensure_ascii=False, default=str) for v in frame[column]]
    table = pa.Table.from_pandas(frame, preserve_index=False)
    # plain `string` columns, as the published datasets have (pandas' string dtype arrives as large_string)
    table = table.cast(pa.schema([f.with_type(pa.string()) if pa.types.is_large_string(f.type) else f
                                  for f in table.schema], metadata=table.schema.metadata))
    metadata = {**(table.schema.metadata or {}), b"calibrate_respond": json.dumps(provenance.to_dict()).encode()}
    table = table.replace_schema_metadata(metadata)
    partial_path = output.with_name(output.name + ".partial")
    try:
        pq.write_table(table, partial_path)
        os.replace(partial_path, output)
    except OSError as error:
        raise CalibrateError(f"out: cannot write {output} ({error.strerror})", ("out",)) from None


def _atomic_write(path: Path, data: bytes) -> None:
    partial_path = path.with_name(path.name + ".partial")
    try:
        partial_path.write_bytes(data)
        os.replace(partial_path, path)
    except OSError as error:
        raise CalibrateError(f"out: cannot write {path} ({error.strerror})", ("out",)) from None
