"""The judge interface: what a backend sees (a PairView) and returns (a Verdict), and the stored record.

Backends only turn one ordered pair into a verdict. Ordering, caching, concurrency, timing and the
judgment table belong to the runner, so an API backend slots in beside the heuristic one without
any caller changing.
"""

from __future__ import annotations

import json
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypedDict

import orjson

from calibrate.data.pairs import Pair

if TYPE_CHECKING:
    import pandas as pd

ORDERS: tuple[str, ...] = ("forward", "reverse")
# The published versions of the rubric and its scoring: v2 (public repo) and v3 (paper); a judge's
# rule sets the fields it is asked for here and the refusal adjustment in stats/rules.py.
RULES: tuple[str, ...] = ("v2", "v3")
DEFAULT_RULE = "v2"
Key = tuple[str, str, int]  # a judgment within one judge config: (item content key, order, repeat)
# The published judge output fields (repo version), in the published order.
JUDGE_FIELDS: tuple[str, ...] = (
    "person_1_core_position", "person_1_has_no_information", "person_1_refusal",
    "person_2_core_position", "person_2_has_no_information", "person_2_refusal",
    "key_points_of_alignment", "key_points_of_opposition", "alignment_score",
)
# Fields of the paper's v3 prompt, optional for every judge.
V3_FIELDS: tuple[str, ...] = ("central_issue", "value_preference")
# Where a JSON object can start in a reply (for extract_json's scan of prose), and how many to try.
OBJECT_START = re.compile(r'\{\s*(?:"|\})')
MAX_OBJECT_STARTS = 200
# A score written as text: ASCII digits only (Python's int() also takes "２" and "0_2"), optionally ".0".
SCORE_TEXT = re.compile(r"[+-]?[0-9]+(?:\.0)?")
# missing_answer: the pair was not judged because an answer is a placeholder ("No response", empty);
# the runner makes it without asking any judge (see Pair.missing_answers).
MISSING_ANSWER = "missing_answer"
# ambiguous_reply: the reply held more than one judgment, or a judgment with a key given twice (extract_json).
AMBIGUOUS_REPLY = "ambiguous_reply"
# invalid_usage: the reply's token counts are not counts (negative, fractional, beyond any model's
# reach): its judgment text is kept with the failure, never used with a made-up cost (read_usage).
INVALID_USAGE = "invalid_usage"
# api_error: the call failed (after its retries); its `FailureKind` says how.
API_ERROR = "api_error"
PARSE_STATUSES: tuple[str, ...] = ("ok", "parse_error", AMBIGUOUS_REPLY, "truncated", "refused_to_judge", API_ERROR,
                                   "no_quorum", MISSING_ANSWER, INVALID_USAGE)


class FailureKind(Enum):
    """Why a judgment, an answer or a call failed, as data. Retries, the exit code of a run with too
    many failures (`max_failed_share`) and the failure counts read the kind and nothing else; the
    failure's reason is the explanation for people and may be worded any way.

    Each kind declares `transient` (a later attempt may not meet it: the call layer retries it, and a
    run counts it against `max_failed_share`), `stops_run` (every further call would fail alike, a
    bad key or a wrong endpoint or model: the run stops instead of failing item by item) and
    `max_retries` (a transient kind whose retry costs more than a wait: at most this many retries,
    whatever the judge's `max_retries`; None: the judge's)."""

    transient: bool
    stops_run: bool
    max_retries: int | None

    def __new__(cls, value: str, transient: bool = False, stops_run: bool = False,
                max_retries: int | None = None) -> FailureKind:
        member = object.__new__(cls)
        member._value_ = value
        member.transient = transient
        member.stops_run = stops_run
        member.max_retries = max_retries
        return member

    # The call failed (parse status `api_error`, answer status `api_error`).
    RATE_LIMITED = ("rate_limited", True)  # HTTP 429
    SERVER_ERROR = ("server_error", True)  # HTTP 5xx (529: overloaded), 409
    TIMEOUT = ("timeout", True)  # no reply in time, or none even began (HTTP 408 too)
    CONNECTION = ("connection", True)  # refused, dropped or cut-short connection, a reply that is not HTTP
    BAD_REQUEST = ("bad_request", False)  # any other 4xx: the server refuses this request
    # The server refuses the structured output asked for (response_format), whatever its status (llama.cpp
    # and Ollama answer 500): never retried as such; the judge asks again in a plainer mode (openai_backend.py).
    FORMAT_REFUSED = ("format_refused", False)
    AUTH = ("auth", False, True)  # HTTP 401, 403: the key
    NOT_FOUND = ("not_found", False, True)  # HTTP 404: the endpoint or the model
    REDIRECTED = ("redirected", False, True)  # HTTP 3xx: the endpoint points elsewhere; never followed
    # a reply over the judge's `max_reply_bytes` (decompressed): reading stopped there; asked once more
    REPLY_TOO_LARGE = ("reply_too_large", True, False, 1)
    UNANSWERED = ("unanswered", True)  # a batch request the provider never ran (expired, cancelled)
    UNRECORDED = ("unrecorded", False)  # a call failure stored before kinds were recorded
    # A judge's reply came but holds no usable judgment (the kind is its parse status).
    PARSE_ERROR = "parse_error"
    AMBIGUOUS_REPLY = "ambiguous_reply"
    TRUNCATED = "truncated"  # the reply hit max_tokens before the judgment ended
    REFUSED_TO_JUDGE = "refused_to_judge"
    INVALID_USAGE = "invalid_usage"
    NO_QUORUM = "no_quorum"  # a panel without enough members' judgments
    MISSING_ANSWER = "missing_answer"  # nothing was asked: an answer is a placeholder
    # A responding model's reply came but holds no usable answer (respond).
    NOT_A_REPLY = "bad_reply"  # not a chat completion
    EMPTY_ANSWER = "empty"
    CONTENT_FILTER = "content_filter"

    @classmethod
    def of_status(cls, parse_status: str) -> FailureKind | None:
        """The kind a parse status implies: None for `ok`; for `api_error`, which says only that the
        call failed, `UNRECORDED` (what a record stored before kinds were recorded gets)."""
        if parse_status == "ok":
            return None
        return cls.UNRECORDED if parse_status == API_ERROR else cls(parse_status)


def status_kind(status: int) -> FailureKind:
    """The kind of an HTTP error status."""
    if status == 429:
        return FailureKind.RATE_LIMITED
    if status == 408:
        return FailureKind.TIMEOUT
    if status in (401, 403):
        return FailureKind.AUTH
    if status == 404:
        return FailureKind.NOT_FOUND
    if 300 <= status < 400:
        return FailureKind.REDIRECTED
    if status == 409 or status >= 500:
        return FailureKind.SERVER_ERROR
    return FailureKind.BAD_REQUEST


def kind_for(value: Any, parse_status: str) -> FailureKind | None:
    """The failure kind of a verdict or record with this parse status: `value` (a kind, or a kind's
    value as stored) checked against the status, or, when None, the kind the status implies (a record
    stored before kinds were recorded has none). Raises ValueError for a kind that is not one, or
    that does not go with the status."""
    if value is None:
        return FailureKind.of_status(parse_status)
    try:
        kind = FailureKind(value)
    except ValueError:
        raise ValueError(f"unknown failure kind {value!r}") from None
    if parse_status == "ok" or (parse_status != API_ERROR and kind is not FailureKind(parse_status)):
        raise ValueError(f"failure kind {kind.value!r} with parse status {parse_status!r}")
    return kind


# More tokens than any model reads or writes in one request: a count beyond it is not a count.
MAX_TOKENS_PER_REQUEST = 10**9


@dataclass(frozen=True)
class PairView:
    """One pair as person 1 / person 2, in the order the judge reads them."""

    issue_description: str
    question_1: str
    response_1: str
    question_2: str
    response_2: str


def view_of(pair: Pair, order: str) -> PairView:
    """Forward: the for-side is person 1. Reverse swaps the two, as `reverse_pair_order` does."""
    for_side = (pair.for_question, pair.for_response)
    against_side = (pair.against_question, pair.against_response)
    first, second = (for_side, against_side) if order == "forward" else (against_side, for_side)
    return PairView(pair.issue_description, *first, *second)


def judgment_schema(rule: str) -> dict[str, Any]:
    """JSON schema of a judge's reply, with the published field types and bounds: key points are strings,
    the score an integer with minimum -2 and maximum 2 (no enum), every field required, nothing else
    allowed. It says nothing of `strict`: a backend adds that only where its provider needs it."""
    person = {f"person_{i}_{field}": kind for i in (1, 2) for field, kind in
              (("core_position", {"type": "string"}), ("has_no_information", {"type": "boolean"}),
               ("refusal", {"type": "boolean"}))}
    properties: dict[str, Any] = {
        **({"central_issue": {"type": "string"}} if rule == "v3" else {}),
        **person,
        "key_points_of_alignment": {"type": "string"},
        "key_points_of_opposition": {"type": "string"},
        **({"value_preference": {"type": "boolean"}} if rule == "v3" else {}),
        "alignment_score": {"type": "integer", "minimum": -2, "maximum": 2},
    }
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


class AmbiguousReply(ValueError):
    """A reply that holds more than one judgment, or a judgment with a key given twice: which one the
    judge meant cannot be told, so it is a typed failure (`ambiguous_reply`), never a pick."""


class _Object(dict):
    """A decoded JSON object that remembers the keys it was given more than once."""

    duplicates: tuple[str, ...] = ()


def _object(pairs: list[tuple[str, Any]]) -> _Object:
    obj = _Object(pairs)
    if len(obj) < len(pairs):
        seen: set[str] = set()
        repeated = []
        for key, _ in pairs:
            if key in seen:
                repeated.append(key)
            seen.add(key)
        obj.duplicates = tuple(dict.fromkeys(repeated))
    return obj


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(object_pairs_hook=_object, parse_constant=_no_constant)


def _plain(value: Any) -> Any:
    """A decoded value with plain dicts (as orjson would give)."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def _judgments_in(value: Any) -> list[dict]:
    """Every judgment-shaped object (a JSON object with 'alignment_score') in a value, nested ones too."""
    found, stack = [], [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if "alignment_score" in item:
                found.append(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def _json_values(stripped: str) -> list[Any]:
    """The JSON values in a reply: the whole text when it is JSON, else every top-level JSON object
    found in it (fenced or in prose; objects inside one found are part of it)."""
    try:
        value, stop = _DECODER.raw_decode(stripped)
        if stop == len(stripped):
            return [value]
    except (ValueError, RecursionError):
        pass
    found: list[Any] = []
    starts = OBJECT_START.finditer(stripped)
    for _ in range(MAX_OBJECT_STARTS):  # bounded: a reply of braces costs milliseconds, not seconds
        match = next(starts, None)
        if match is None:
            return found
        try:
            value, stop = _DECODER.raw_decode(stripped, match.start())
        except (ValueError, RecursionError):  # not JSON from here, or absurdly nested
            continue
        found.append(value)
        starts = OBJECT_START.finditer(stripped, stop)  # objects inside this one are part of it
    if next(starts, None) is None:
        return found
    raise ValueError(f"the reply has more than {MAX_OBJECT_STARTS} places where a JSON object could start; "
                     "it is not read")


def extract_json(text: str) -> Any:
    """The judgment in a reply: the whole text when it is JSON, else the one judgment-shaped JSON
    object (one with 'alignment_score') found in it, fenced or in prose; other JSON objects in the
    prose (a quoted example) are ignored. More than one judgment-shaped object, or a key given twice
    in the judgment, raises AmbiguousReply: the reply is a failure, never settled by a guess. With no
    judgment-shaped object, the first JSON value is returned (validation then names what is missing).
    """
    if not isinstance(text, str):
        raise ValueError(f"the reply is not text but {type(text).__name__}")
    stripped = text.strip()
    values = _json_values(stripped)
    judgments = [judgment for value in values for judgment in _judgments_in(value)]
    if len(judgments) > 1:
        raise AmbiguousReply(f"the reply holds {len(judgments)} judgments (JSON objects with 'alignment_score'); "
                             "which one is the judge's own cannot be told")
    if judgments:
        judgment = judgments[0]
        duplicates = getattr(judgment, "duplicates", ())
        if duplicates:
            raise AmbiguousReply("the judgment gives " + ", ".join(f"'{key}'" for key in duplicates)
                                 + " more than once; which value the judge meant cannot be told")
        chosen = next(value for value in values if _judgments_in(value))
    elif values:
        chosen = values[0]  # not a judgment: validation names what is missing
    else:
        raise ValueError("the reply's JSON does not parse" if "{" in stripped else "no JSON object in the reply")
    try:
        chosen = _plain(chosen)
        orjson.dumps(chosen)  # what the store must be able to write (no lone surrogate "\\ud800", ...)
    except (TypeError, RecursionError) as error:
        raise ValueError(f"the reply's JSON cannot be stored: {str(error)[:100]}") from None
    return chosen


def _boolean(value: Any, key: str) -> bool:
    """A flag: JSON true/false, or the strings "true"/"false" that some models write."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValueError(f"'{key}' must be a boolean, got {value!r}")


def _score(value: Any) -> int:
    """The alignment score: an integer in -2..2, also when written as 2.0 or "2" (or "2.0"). Text counts
    only as ASCII digits with an optional sign: "２" (full width), "0_2", "2e0" are not read as numbers."""
    if isinstance(value, str) and SCORE_TEXT.fullmatch(value.strip()):
        value = int(value.strip().removesuffix(".0"))
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not -2 <= value <= 2:
        raise ValueError(f"'alignment_score' must be an integer in -2..2, got {value!r}")
    return value


def _key_points(value: Any, key: str) -> list[str]:
    """Key points as a list of strings: the published schema asks for one string, our earlier schema
    (and many models) give a list; both are read, an empty or absent value as none."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value.strip() else []
    if isinstance(value, list) and all(isinstance(point, (str, int, float)) for point in value):
        return [str(point) for point in value]
    raise ValueError(f"'{key}' must be a string or a list of strings, got {value!r:.80}")


def validate_fields(data: Any) -> dict[str, Any]:
    """Check a judge's parsed output; raise ValueError naming the first bad field.

    Booleans written as "true"/"false" and whole scores written as 2.0 or "2" are read as what they
    say; anything else that is not the rubric's type is an error, never a guess.
    """
    if not isinstance(data, dict):
        raise ValueError("judge output is not a JSON object")
    out: dict[str, Any] = {}
    for person in ("person_1", "person_2"):
        for flag in ("has_no_information", "refusal"):
            key = f"{person}_{flag}"
            out[key] = _boolean(data.get(key), key)
        position = data.get(f"{person}_core_position")
        out[f"{person}_core_position"] = "" if position is None else str(position)  # null is not "None"
    out["alignment_score"] = _score(data.get("alignment_score"))
    for key in ("key_points_of_alignment", "key_points_of_opposition"):
        out[key] = _key_points(data.get(key), key)
    if "value_preference" in data:
        out["value_preference"] = _boolean(data["value_preference"], "value_preference")
    if data.get("central_issue") is not None:
        out["central_issue"] = str(data["central_issue"])
    return out


class TokenCounts(TypedDict):
    """A reply's token counts, as `Verdict` takes them (`Verdict(..., **counts)`)."""

    input_tokens: int
    output_tokens: int


class Spend(TokenCounts):
    """Token counts with the requests they took (retries included), summed over attempts or members."""

    attempts: int


def read_usage(usage: Any, input_name: str, output_name: str) -> tuple[TokenCounts, str | None]:
    """A reply's token counts as {"input_tokens", "output_tokens"}, and what is wrong with them, if
    anything: each must be absent (0) or a whole number in 0..MAX_TOKENS_PER_REQUEST. With a problem
    the counts are 0, and the caller turns the reply into an `invalid_usage` failure."""
    if usage is None:
        usage = {}
    if not isinstance(usage, dict):
        return {"input_tokens": 0, "output_tokens": 0}, f"usage is a JSON {type(usage).__name__}, not an object"
    counts: list[int] = []
    for name in (input_name, output_name):
        value = usage.get(name)
        if value is None:
            value = 0
        whole = isinstance(value, int) or isinstance(value, float) and value.is_integer()
        if isinstance(value, bool) or not whole or not 0 <= value <= MAX_TOKENS_PER_REQUEST:
            problem = (f"usage {name} = {value!r:.40} is not a token count "
                       f"(a whole number in 0..{MAX_TOKENS_PER_REQUEST:,})")
            return {"input_tokens": 0, "output_tokens": 0}, problem
        counts.append(int(value))
    return {"input_tokens": counts[0], "output_tokens": counts[1]}, None


def invalid_usage(text: str, problem: str) -> Verdict:
    """The failure of a reply whose token counts are unusable; its text is kept, so nothing paid is lost."""
    return Verdict(None, text, INVALID_USAGE, f"the server's {problem}; the reply is kept with this failure, "
                                              "not used, since its cost cannot be known")


def call_failure(kind: FailureKind, reason: str, raw_output: str = "", *, input_tokens: int = 0,
                 output_tokens: int = 0, attempts: int = 1, truncated_chars: int = 0) -> Verdict:
    """The verdict of a call that failed (`api_error`), of this kind."""
    return Verdict(None, raw_output, API_ERROR, reason, input_tokens, output_tokens, attempts, truncated_chars, kind)


@dataclass
class Verdict:
    """What a backend returns for one view: validated fields, or a typed failure: its kind (what code
    reads) and its reason (what a person reads). A failure other than `api_error` has the kind its
    parse status names; an `api_error` must say its kind (`call_failure`)."""

    fields: dict[str, Any] | None
    raw_output: str
    parse_status: str = "ok"
    failure_reason: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    attempts: int = 1  # requests made, retries included
    truncated_chars: int = 0  # answer characters cut to fit the prompt
    failure_kind: FailureKind | None = None
    # the structured output the request that made it asked for (None: no such notion)
    response_format: str | None = None

    def __post_init__(self) -> None:
        if self.parse_status not in PARSE_STATUSES:
            raise ValueError(f"unknown parse status {self.parse_status!r}")
        if (self.parse_status == "ok") != (self.fields is not None):
            raise ValueError("a verdict has fields exactly when its parse status is 'ok'")
        if self.failure_kind is None and self.parse_status == API_ERROR:
            raise ValueError("an api_error verdict needs its failure kind")
        self.failure_kind = kind_for(self.failure_kind, self.parse_status)


@dataclass
class Judgment:
    """One stored judgment of one item in one order by one judge config (repeat 0 unless the same
    item is judged again on purpose, to measure how stable the judge is)."""

    judge_name: str
    config_hash: str
    item_key: str
    order: str
    parse_status: str
    failure_reason: str | None
    raw_output: str
    latency_s: float | None  # None when unknown (batch results)
    input_tokens: int
    output_tokens: int
    attempts: int = 1
    truncated_chars: int = 0
    repeat: int = 0
    created_at: float = field(default_factory=time.time)
    batch_id: str | None = None  # the provider batch (or imported batch file) it came from, charged at batch prices
    fields: dict[str, Any] = field(default_factory=dict)
    # Why it failed, as data (None when it did not); stored as the kind's value. A record stored before
    # kinds were recorded has none: it gets the one its parse status implies (`FailureKind.of_status`).
    failure_kind: FailureKind | None = None
    # The structured output the judge's request asked for (json_schema, json_object, none), as sent after any
    # step down (openai_backend.py); None for a judge without one, or a record stored before it was recorded.
    response_format: str | None = None

    def __post_init__(self) -> None:
        try:
            self.failure_kind = kind_for(self.failure_kind, self.parse_status)
        except ValueError as problem:  # a TypeError, as for any other field: the store quarantines the record
            raise TypeError(str(problem)) from None


class Backend(ABC):
    """A way of obtaining verdicts. Subclasses declare their config keys, and what they send, as data.

    A judge that sends requests (`SENDS_REQUESTS`, an API judge) builds one per view with
    `build_request` and sends it with `judge_request`, so that a run can price a request before it
    is sent (`max_cost`, estimate.py) and then send that very one. Offline judges, and panels (whose
    members send theirs), send none: they only `judge`."""

    # key -> (default, changes the judgment?)
    CONFIG_KEYS: ClassVar[dict[str, tuple[Any, bool]]] = {}
    SENDS_REQUESTS: ClassVar[bool] = False
    BATCH_API: ClassVar[str | None] = None  # the provider batch API judging with this backend (provider_batch.py)
    # The judges this one is made of (a panel's members): the runner judges with each of them, through
    # the cache under its own config, and this one combines their tables (`combine_tables`).
    members: Sequence[Backend] = ()

    def __init__(self, config: Any) -> None:  # a JudgeConfig (config.py builds on this module)
        self.config = config

    @property
    def response_format(self) -> str | None:
        """The structured output the next request asks for (None: this judge has no such setting)."""
        return None

    def judgment_hash(self, response_format: str | None) -> str:
        """The config hash a judgment made with this structured output is stored under: the config's own
        for the mode the config asks for; a mode the judge stepped down to is part of what identifies
        the judgment, so a run where the asked-for mode works never reuses it."""
        return self.config.config_hash

    @classmethod
    def member_names(cls, settings: dict[str, Any]) -> list[str]:
        """The judges (names or .toml paths) this one is made of; only a panel has any."""
        return []

    @classmethod
    def validate_settings(cls, settings: dict[str, Any], path: Path, where: str) -> None:
        """Raise CalibrateError naming the key when a setting is unusable."""

    @classmethod
    def meaning_extras(cls, settings: dict[str, Any], path: Path) -> dict[str, Any]:
        """Extra content that changes judgments but is not a key's value (e.g. a prompt file's text)."""
        return {}

    def preflight(self) -> None:
        """Fail before any work when the backend cannot run (e.g. a missing API key)."""

    def pacing(self) -> Any:
        """What pacing at rate limits did so far (a `calls.PacingStats`), or None for a judge without limits."""
        return None

    def combine_tables(self, tables: list[pd.DataFrame]) -> pd.DataFrame:
        """This judge's judgment columns from its members' judgment tables (rows aligned: the same pairs,
        orders and repeats). Only a judge with `members` combines."""
        raise NotImplementedError(f"backend {type(self).__name__} has no members to combine")

    @abstractmethod
    async def judge(self, view: PairView) -> Verdict:
        """Judge one ordered pair. Must not raise for a bad reply: return a failed Verdict."""

    def build_request(self, view: PairView) -> tuple[dict[str, Any], int]:
        """The request body for one view, and how many answer characters were cut (`SENDS_REQUESTS`)."""
        raise NotImplementedError(f"backend '{self.config.backend}' sends no requests")

    async def judge_request(self, body: dict[str, Any], cut: int) -> Verdict:
        """Judge with a request `build_request` made (`SENDS_REQUESTS`)."""
        raise NotImplementedError(f"backend '{self.config.backend}' sends no requests")

    async def aclose(self) -> None:
        """Release connections."""
