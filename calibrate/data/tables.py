"""Tables the statistics commands read: a ratings table (items x raters) for `agreement` and a
truth / prediction table for `estimate`. They are read and checked here, every defect one
`CalibrateError` line naming the file, row and column, so that the statistics get values, never paths."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from calibrate.data.sources import read_table
from calibrate.errors import CalibrateError

ITEM_COLUMN = "item"
RATINGS_SUFFIXES = (".csv", ".tsv", ".parquet")
BOOLEAN_WORDS = {"true": 1.0, "false": 0.0}


# --------------------------------------------------------------------------- ratings (agreement)


def load_ratings(path: str | Path, truth: str | None = None) -> tuple[pd.DataFrame, pd.Series | None]:
    """Read a wide ratings table: column `item` plus one column per rater, an empty cell = not rated.

    Returns (ratings indexed by item, items x raters; truth Series or None). Numeric columns become
    floats (NaN = missing); text columns stay strings, for nominal labels. CSV item ids are kept as
    text, exactly as written ("007" stays "007"). Every defect is one CalibrateError naming the file.
    """
    path = Path(path)
    where = f"ratings {path}"
    frame = _read_ratings_file(path)
    if ITEM_COLUMN not in frame.columns:
        raise CalibrateError(f"{where}: no '{ITEM_COLUMN}' column (columns: {', '.join(map(str, frame.columns))})")
    if truth is not None and (truth == ITEM_COLUMN or truth not in frame.columns):
        raise CalibrateError(f"{where}: no truth column '{truth}'")
    raters = [c for c in frame.columns if c not in (ITEM_COLUMN, truth)]
    needed = 1 if truth is not None else 2
    if len(raters) < needed:
        besides = f"'{ITEM_COLUMN}'" + (f" and truth '{truth}'" if truth is not None else "")
        raise CalibrateError(f"{where}: needs at least {needed} rater column(s) besides {besides}, found {len(raters)}")
    if frame.empty:
        raise CalibrateError(f"{where}: no rows")
    items = _item_ids(frame[ITEM_COLUMN], where)
    columns = {name: _rating_column(frame[name], where) for name in [*raters, *([truth] if truth else [])]}
    _check_one_kind(columns, where)
    ratings = pd.DataFrame({name: columns[name].to_numpy() for name in raters}, index=items)
    truth_series = pd.Series(columns[truth].to_numpy(), index=items, name=truth) if truth is not None else None
    return ratings, truth_series


def _read_ratings_file(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    if suffix not in RATINGS_SUFFIXES:
        raise CalibrateError(f"cannot read {path}: unsupported file type (use {', '.join(RATINGS_SUFFIXES)})")
    try:
        if suffix == ".parquet":
            return pd.read_parquet(path)
        # Everything as text, so that numbers and text are told apart below, per cell, the same way
        # for CSV and parquet; only an empty cell is missing ("NA" is not silently a gap).
        return pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", dtype=str,
                           keep_default_na=False, na_values=[""])
    except Exception as error:  # the OS, pandas and pyarrow raise many types for one cause
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CalibrateError(f"cannot read {path}: {reason[:200]}") from None


def _item_ids(column: pd.Series, where: str) -> pd.Index:
    ids = [v.strip() if isinstance(v, str) else v for v in column.tolist()]
    for row, value in enumerate(ids, start=1):
        if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
            raise CalibrateError(f"{where}, row {row}: empty '{ITEM_COLUMN}'")
    index = pd.Index(ids, name=ITEM_COLUMN)
    if not index.is_unique:
        duplicate = ids[int(index.duplicated().argmax())]
        rows = [str(row) for row, value in enumerate(ids, start=1) if value == duplicate]
        raise CalibrateError(f"{where}: duplicate item id {plain_label(duplicate)!r} (rows {', '.join(rows)})")
    return index


def _rating_column(column: pd.Series, where: str) -> pd.Series:
    """One column as floats (every cell a number) or strings (every cell text); NaN = empty cell."""
    if pd.api.types.is_numeric_dtype(column.dtype):
        return column.astype(float)
    cells = [_rating_cell(value, f"{where}, row {row}: column '{column.name}'")
             for row, value in enumerate(column.tolist(), start=1)]
    number_rows = [row for row, cell in enumerate(cells, start=1) if isinstance(cell, float)]
    text_rows = [row for row, cell in enumerate(cells, start=1) if isinstance(cell, str)]
    if number_rows and text_rows:
        first_number, first_text = number_rows[0], text_rows[0]
        raise CalibrateError(
            f"{where}: column '{column.name}' mixes numbers and text "
            f"(row {first_number}: {cells[first_number - 1]:g}, row {first_text}: {cells[first_text - 1]!r})")
    values = [np.nan if cell is None else cell for cell in cells]
    return pd.Series(values, index=column.index, dtype=object if text_rows else float, name=column.name)


def _rating_cell(value: Any, where: str) -> float | str | None:
    """A cell as a number, a text label or None (missing); numeric-looking text is a number."""
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        try:
            number = float(text)
        except ValueError:
            return text
        return number if math.isfinite(number) else text
    if isinstance(value, numbers.Real):
        return None if math.isnan(value) else float(value)
    if value is None or value is pd.NA:
        return None
    raise CalibrateError(f"{where}: expected a number or a text label, got {type(value).__name__}")


def _check_one_kind(columns: dict[str, pd.Series], where: str) -> None:
    """All raters (and the truth) must rate on one scale: all numbers or all text."""
    numeric = [name for name, c in columns.items() if c.notna().any() and c.dtype == float]
    text = [name for name, c in columns.items() if c.notna().any() and c.dtype != float]
    if numeric and text:
        raise CalibrateError(f"{where}: columns mix numbers and text ('{numeric[0]}' is numeric, '{text[0]}' is text)")


def plain_label(value: Any) -> int | float | str:
    """A label or item id as a JSON-ready Python value: ints where integral (1.0 -> 1)."""
    if isinstance(value, numbers.Real):
        number = float(value)
        return int(number) if number.is_integer() else number
    return str(value)


# --------------------------------------------------------------------------- truth and predictions (estimate)


@dataclass(frozen=True)
class PredictionTable:
    """A truth and a prediction column, one value per row: None where the truth is empty (an
    unlabelled row); every prediction is a number. `origin` names the file in errors."""

    origin: str
    truth_column: str
    pred_column: str
    truth: tuple[float | None, ...]
    pred: tuple[float, ...]


def read_prediction_table(path: Path | str, truth: str, pred: str) -> PredictionTable:
    """The truth and prediction columns of a CSV / JSONL / parquet table.

    A row with an empty truth is unlabelled; every row needs a prediction. Values are numbers;
    true/false (booleans or the words, any case) count as 1/0, so refusal flags work. Errors name the
    file and the column or row (rows count from 1, header excluded).
    """
    path = Path(path)
    frame = read_table(path)
    for column in dict.fromkeys((truth, pred)):
        if column not in frame.columns:
            available = ", ".join(f"'{c}'" for c in list(frame.columns)[:12])
            raise CalibrateError(f"{path}: missing column '{column}' (columns: {available or 'none'})")
    truth_values = [_number_cell(v, f"{path}, row {row}: column '{truth}'")
                    for row, v in enumerate(frame[truth].tolist(), 1)]
    pred_values = [_number_cell(v, f"{path}, row {row}: column '{pred}'")
                   for row, v in enumerate(frame[pred].tolist(), 1)]
    for row, value in enumerate(pred_values, 1):
        if value is None:
            raise CalibrateError(f"{path}, row {row}: column '{pred}' is empty; every row needs a prediction")
    return PredictionTable(str(path), truth, pred, tuple(truth_values), tuple(v for v in pred_values if v is not None))


def _number_cell(value: Any, where: str) -> float | None:
    """One table cell as a finite float, or None when empty; anything else is an error naming it."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, (bool, np.bool_)):
        return 1.0 if value else 0.0
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        if text.lower() in BOOLEAN_WORDS:
            return BOOLEAN_WORDS[text.lower()]
        try:
            number = float(text)
        except ValueError:
            raise CalibrateError(f"{where}: {value[:40]!r} is not a number") from None
        if not math.isfinite(number):
            raise CalibrateError(f"{where}: {value[:40]!r} is not a finite number")
        return number
    if isinstance(value, numbers.Real):
        number = float(value)
        if math.isnan(number):
            return None  # pandas' and parquet's missing value
        if not math.isfinite(number):
            raise CalibrateError(f"{where}: {number} is not a finite number")
        return number
    raise CalibrateError(f"{where}: expected a number or true/false, got {type(value).__name__} {str(value)[:40]!r}")
