"""Pairs: the record the judge reads, and the validation that turns dataset rows into pairs.

A response dataset is benchmark rows plus `for_response` / `against_response`. Every defect is
reported as one `CalibrateError` line naming the set, the file, and the row or column.

A failed generation is not a defect: the public VAL-Bench pipeline stores it as the text "No response",
and other datasets leave the answer empty or null. Such a placeholder (`is_placeholder_answer`) loads
as a pair like any other, marked by `Pair.missing_answers`, and is never judged as the model's answer
(the runner gives it a `missing_answer` failure instead).
"""

from __future__ import annotations

import ast
import hashlib
import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from calibrate.errors import CalibrateError
from calibrate.records import Record

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

# Columns the judge needs; `id` identifies a pair within its set.
REQUIRED_TEXT_COLUMNS = ("issue_description", "for_question", "against_question")
RESPONSE_COLUMNS = ("for_response", "against_response")
REQUIRED_COLUMNS = ("id", *REQUIRED_TEXT_COLUMNS, *RESPONSE_COLUMNS)
# Published columns used for breakdowns; optional so that minimal hand-made sets still load.
OPTIONAL_COLUMNS = ("category", "issue_scale")
# What the public response pipeline writes where a generation failed (compared trimmed, in any case).
PLACEHOLDER_ANSWER = "No response"


def is_placeholder_answer(text: Any) -> bool:
    """Whether an answer stands for no answer: null, empty or whitespace-only, or "No response"
    (trimmed, any letter case). The one rule for every input format."""
    if not isinstance(text, str):
        return is_missing(text)
    if len(text) > len(PLACEHOLDER_ANSWER) and not text[0].isspace() and not text[-1].isspace():
        return False  # nothing to trim and longer than the placeholder: an answer (no copy made)
    stripped = text.strip()
    # casefolding never shortens a text, so only a text no longer than the placeholder can be it: a long
    # answer is not copied to be casefolded
    return not stripped or (len(stripped) <= len(PLACEHOLDER_ANSWER)
                            and stripped.casefold() == PLACEHOLDER_ANSWER.casefold())


@dataclass(frozen=True)
class Pair:
    """One question pair with both answers, as the judge will see it."""

    id: int
    set_name: str
    issue_description: str
    for_question: str
    against_question: str
    for_response: str
    against_response: str
    category: str | None = None
    issue_scale: int | None = None
    extras: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    # Hash of everything the judge reads: equal content is judged once, whatever its id.
    content_key: str = field(init=False, compare=False, repr=False)
    # The response columns whose answer is a placeholder (empty, null or "No response"), in column
    # order; empty for a pair with both answers. Such a pair is never sent to a judge.
    missing_answers: tuple[str, ...] = field(init=False, compare=False, repr=False)
    # The extra dataset columns as one JSON text, whatever their types: the judgment table's `extras` column,
    # made once per pair however many judges' tables carry it.
    extras_text: str = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        """All three derived at construction: every pair read is looked up by its key and put in a table, and
        computing them here (also in `replace`) costs half what a lazily cached property does on 115,000 pairs."""
        issue, for_question, for_response = self.issue_description, self.for_question, self.for_response
        against_question, against_response = self.against_question, self.against_response
        # each part length-prefixed, so the payload is unambiguous
        payload = (f"{len(issue)}:{issue}{len(for_question)}:{for_question}{len(for_response)}:{for_response}"
                   f"{len(against_question)}:{against_question}{len(against_response)}:{against_response}")
        object.__setattr__(self, "content_key", hashlib.sha256(payload.encode("utf-8")).hexdigest()[:32])
        object.__setattr__(self, "missing_answers", tuple(
            column for column, text in zip(RESPONSE_COLUMNS, (for_response, against_response), strict=True)
            if is_placeholder_answer(text)))
        object.__setattr__(self, "extras_text",
                           json.dumps(self.extras, ensure_ascii=False, default=str) if self.extras else "{}")

    @property
    def missing_side(self) -> str | None:
        """"for", "against" or "both" when an answer is a placeholder, else None."""
        sides = self.missing_answers
        if not sides:
            return None
        return "both" if len(sides) == 2 else sides[0].removesuffix("_response")


def missing_answer_reason(pair: Pair) -> str:
    """Why a pair with placeholder answers was not judged, naming each side, e.g.
    "for_response is a placeholder ('No response'); not sent to the judge"."""
    parts = []
    for column in pair.missing_answers:
        text = getattr(pair, column)
        parts.append(f"{column} is empty" if not text.strip() else f"{column} is a placeholder ({text.strip()!r})")
    return "; ".join(parts) + " (the model gave no answer); not sent to the judge"


@dataclass
class LoadedSet:
    """A validated set of pairs plus where it came from."""

    name: str
    source: str
    files: list[str]
    pairs: list[Pair]

    @property
    def fingerprint(self) -> str:
        """Order-independent hash of the set's content, recorded in outputs for provenance."""
        keys = sorted(f"{p.id}:{p.content_key}" for p in self.pairs)
        return hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class SetSource(Record):
    """Where a judged set came from (portable paths) and its content fingerprint: provenance in the records."""

    source: str
    files: list[str]
    fingerprint: str
    n_pairs: int


# --------------------------------------------------------------------------- responses


def response_text(value: Any) -> str:
    """Return the text of a response given as a string, a {role, content} dict or a message list.

    A null value (a missing cell: None or NaN) is an answer that was never given and reads as "", a
    placeholder like "" and "No response" (see `is_placeholder_answer`). Raises ValueError with a
    short reason when the value is not a response.
    """
    if isinstance(value, str):
        stripped = value.strip()
        if stripped.startswith(("{", "[")) and "content" in stripped:
            parsed = _parse_message_literal(stripped)
            if parsed is not None:
                return response_text(parsed)
        return value
    if isinstance(value, dict):
        content = value.get("content")
        if isinstance(content, str):
            return content
        raise ValueError("a message dict needs a string 'content'")
    import numpy as np  # here, not at the top: importing calibrate stays light (numpy is loaded by any reader)

    if isinstance(value, (list, tuple, np.ndarray)):
        messages = [m for m in value if isinstance(m, dict)]
        assistant = [m for m in messages if m.get("role") == "assistant"] or messages
        if assistant:
            return response_text(assistant[-1])
        raise ValueError("a message list needs at least one message dict")
    if is_missing(value):
        return ""  # a missing cell: no answer, the placeholder the runner never judges
    raise ValueError(f"expected a string or a {{role, content}} message, got {type(value).__name__}")


def _parse_message_literal(text: str) -> Any:
    """A message dict (or message list) serialised into a CSV cell, as JSON or as a Python literal."""
    for parse in (json.loads, ast.literal_eval):
        try:
            parsed = parse(text)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):  # TypeError: "{[]: 1}"
            continue
        if isinstance(parsed, dict) and "content" in parsed:
            return parsed
        if isinstance(parsed, list) and parsed and all(isinstance(m, dict) and "content" in m for m in parsed):
            return parsed
    return None


# --------------------------------------------------------------------------- validation


def frame_to_pairs(frame: pd.DataFrame, set_name: str, origin: str) -> list[Pair]:
    """Validate one file's rows and turn them into pairs; `origin` names the file in errors."""
    return records_to_pairs(list(frame.columns), frame.to_dict("records"), set_name, origin)


def records_to_pairs(columns: list[str], records: list[dict], set_name: str, origin: str,
                     first_row: int = 1) -> list[Pair]:
    """Validate rows (dicts) and turn them into pairs; `first_row` is the file row number of the
    first record, as a chunk of a file starts further down. A key a record lacks reads as null. No
    records: no pairs (the caller says the source has no rows, rather than that it lacks columns)."""
    if not records:
        return []
    where = f"set '{set_name}' ({origin})"
    for column in REQUIRED_COLUMNS:
        if column not in columns:
            raise CalibrateError(f"{where}: missing required column '{column}'")
    extra_columns = [c for c in columns if c not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    return [_row_to_pair(row, row_number, set_name, where, extra_columns)
            for row_number, row in enumerate(records, start=first_row)]


def batch_to_pairs(batch: pa.RecordBatch, set_name: str, origin: str, first_row: int = 1) -> list[Pair]:
    """The pairs `records_to_pairs` makes of an Arrow batch's rows, built a column at a time when the
    batch's types and values vouch that every row passes the row checks (`arrow_vouches`); otherwise
    row by row, which decides and names any defect."""
    if not arrow_vouches(batch):
        return records_to_pairs(batch.schema.names, batch.to_pylist(), set_name, origin, first_row)
    import pyarrow.compute as pc  # here, not at the top: importing calibrate stays light
    import pyarrow.types as types

    columns = {name: batch.column(name) for name in batch.schema.names}
    texts = [columns[name].to_pylist() for name in REQUIRED_TEXT_COLUMNS]
    for name in RESPONSE_COLUMNS:
        column = columns[name]
        if types.is_struct(column.type):  # messages: the content of each (no message: no answer, as a null cell)
            content = pc.if_else(pc.is_valid(column), pc.struct_field(column, "content"), None).to_pylist()
            texts.append(["" if text is None else text for text in content])
        else:
            texts.append([response_text(value) for value in column.to_pylist()])
    absent = [None] * batch.num_rows
    optional = [columns[name].to_pylist() if name in columns else absent for name in OPTIONAL_COLUMNS]
    extras = {name: [plain_value(value) for value in column.to_pylist()]
              for name, column in columns.items() if name not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS}
    rows = zip(columns["id"].to_pylist(), *texts, *optional, strict=True)
    return [Pair(id=pair_id, set_name=set_name, issue_description=issue, for_question=for_question,
                 against_question=against_question, for_response=for_response, against_response=against_response,
                 category=category, issue_scale=issue_scale,
                 extras={name: values[index] for name, values in extras.items()})
            for index, (pair_id, issue, for_question, against_question, for_response, against_response, category,
                        issue_scale) in enumerate(rows)]


def arrow_vouches(batch: pa.RecordBatch) -> bool:
    """Whether an Arrow batch's column types and values alone show that every row passes `_row_to_pair`
    as it is: each column once; an integer id and question texts, none null; answers as text or as
    messages (structs with a text `content`, there wherever the message is); a text category and an
    integer issue scale in 0..5 where given. Anything else (a float id, a list of messages, a
    dictionary-encoded column, a null question) is left to the row checks."""
    import pyarrow.compute as pc  # here, not at the top: importing calibrate stays light
    import pyarrow.types as types

    names = batch.schema.names
    if len(set(names)) != len(names) or any(name not in names for name in REQUIRED_COLUMNS):
        return False
    kind = {name: batch.schema.field(name).type for name in names}

    def text(of: pa.DataType) -> bool:
        return types.is_string(of) or types.is_large_string(of)

    if not (types.is_integer(kind["id"]) and all(text(kind[name]) for name in REQUIRED_TEXT_COLUMNS)):
        return False
    if any(batch.column(name).null_count for name in ("id", *REQUIRED_TEXT_COLUMNS)):
        return False
    for name in RESPONSE_COLUMNS:
        if types.is_struct(kind[name]):
            index = kind[name].get_field_index("content")
            if index < 0 or not text(kind[name].field(index).type):
                return False
            column = batch.column(name)
            if pc.any(pc.and_(pc.is_valid(column), pc.is_null(pc.struct_field(column, "content")))).as_py():
                return False
        elif not (text(kind[name]) or types.is_null(kind[name])):
            return False
    if "category" in names and not (text(kind["category"]) or types.is_null(kind["category"])):
        return False
    if "issue_scale" in names and not types.is_null(kind["issue_scale"]):
        if not types.is_integer(kind["issue_scale"]):
            return False
        low, high = (value.as_py() for value in pc.min_max(batch.column("issue_scale")).values())
        if low is not None and not (low >= 0 and high <= 5):
            return False
    return True


def _row_to_pair(row: dict, row_number: int, set_name: str, where: str, extra_columns: list[str]) -> Pair:
    at = f"{where}, row {row_number}"
    pair_id = integer_value(row.get("id"), f"{at}: column 'id'")
    texts = {}
    for column in REQUIRED_TEXT_COLUMNS:
        value = row.get(column)
        if not isinstance(value, str):
            raise CalibrateError(f"{at}: column '{column}' must be a string, got {type_name(value)}")
        texts[column] = value
    for column in RESPONSE_COLUMNS:
        try:
            texts[column] = response_text(row.get(column))
        except ValueError as reason:
            raise CalibrateError(f"{at}: column '{column}': {reason}") from None
    category = row.get("category")
    if category is not None and not is_missing(category) and not isinstance(category, str):
        raise CalibrateError(f"{at}: column 'category' must be a string, got {type_name(category)}")
    scale = row.get("issue_scale")
    issue_scale = None
    if scale is not None and not is_missing(scale):
        issue_scale = integer_value(scale, f"{at}: column 'issue_scale'")
        if not 0 <= issue_scale <= 5:
            raise CalibrateError(f"{at}: column 'issue_scale' must be in 0..5, got {issue_scale}")
    return Pair(
        id=pair_id,
        set_name=set_name,
        category=None if is_missing(category) else category,
        issue_scale=issue_scale,
        extras={c: plain_value(row.get(c)) for c in extra_columns},
        **texts,
    )


# An integer written as text: ASCII digits with an optional sign, nothing else.
INTEGER_TEXT = re.compile(r"[+-]?[0-9]+")


def integer_value(value: Any, what: str) -> int:
    if type(value) is int:  # most cells; answered before the import below
        return value
    import numpy as np  # here, not at the top: importing calibrate stays light (numpy is loaded by any reader)

    if isinstance(value, (bool, np.bool_)):
        raise CalibrateError(f"{what} must be an integer, got bool")
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return int(value)
    if isinstance(value, str):  # a CSV cell, read as text: "12", or "12.0" as pandas writes a gappy int column
        digits = value.strip().removesuffix(".0")
        if INTEGER_TEXT.fullmatch(digits):  # not "--5", "¹²", "２" or "0_2", which isdigit()/int() let through
            return int(digits)  # exact, also beyond float precision
    raise CalibrateError(f"{what} must be an integer, got {type_name(value)} {str(value)[:40]!r}")


def is_missing(value: Any) -> bool:
    """A null cell, whatever the reader: None, NaN (pandas), pd.NA (pandas' nullable dtypes)."""
    if value is None:
        return True
    if isinstance(value, (str, int)):  # most cells; answered before the imports below
        return False
    import numpy as np  # here, not at the top: importing calibrate stays light (a reader has loaded both)
    import pandas as pd

    return value is pd.NA or (isinstance(value, (float, np.floating)) and math.isnan(value))


def type_name(value: Any) -> str:
    return "null" if is_missing(value) else type(value).__name__


def plain_value(value: Any) -> Any:
    """Extra columns are carried through; numpy containers become JSON-friendly lists."""
    if value is None or isinstance(value, (str, int)):  # most cells; answered before the import below
        return value
    import numpy as np  # here, not at the top: importing calibrate stays light (numpy is loaded by any reader)

    if isinstance(value, np.ndarray):
        return [plain_value(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None  # a missing cell, whatever the reader: pandas gives NaN, JSON and Arrow give null
    return value


def check_unique_ids(pairs: Iterable[Pair], set_name: str, source: str) -> None:
    seen: set[int] = set()
    for pair in pairs:
        if pair.id in seen:
            raise CalibrateError(f"set '{set_name}' ({source}): duplicate id {pair.id}")
        seen.add(pair.id)

