"""Human label files: the long format (one row per item x annotator, with the flags) and the older wide
format (one column of scores per annotator), read into one long table.

Long format, as `calibrate annotate export` writes it and `--human` / `--anchor-labels` read it:
`item` ("<set or source>/<pair_id>", as calibrate names items), `annotator`, `alignment_score` (-2..2),
and optionally `person_1_refusal`, `person_2_refusal`, `person_1_has_no_information`,
`person_2_has_no_information` (person 1 answers the for-question). A missing flag is an empty cell: then
only the score is compared. `inclusion_probability` (0 < p <= 1, the same on every row of an item): the
chance the study's draw had of choosing the pair (`annotate --select`), which every estimator that uses
the labels weights by; absent or empty, every pair had the same chance (1.0 stands for "uniform").
Other columns (a note, the time taken) are carried and ignored.

Wide format: `item` (or `set_name` and `pair_id`) and one column per annotator holding scores.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, SupportsFloat

import numpy as np
import pandas as pd

from calibrate.data.sources import read_source_frame
from calibrate.errors import CalibrateError

SCORE_LABELS = (-2, -1, 0, 1, 2)
ITEM, ANNOTATOR, SCORE = "item", "annotator", "alignment_score"
LABEL_FLAGS = ("person_1_refusal", "person_2_refusal", "person_1_has_no_information", "person_2_has_no_information")
LABEL_COLUMNS = (ITEM, ANNOTATOR, SCORE, *LABEL_FLAGS)
INCLUSION = "inclusion_probability"  # the study's chance of drawing the item; 1.0 = uniform
TRUE_TEXT, FALSE_TEXT = ("true", "1", "yes", "y", "t"), ("false", "0", "no", "n", "f")


def item_name(source: str, pair_id: int) -> str:
    """How calibrate names an item: the set (or response source) and the pair id."""
    return f"{source}/{int(pair_id)}"


def split_item(item: str) -> tuple[str, int]:
    """'<source>/<pair_id>' as (source, pair_id); the source may itself hold slashes."""
    source, _, pair_id = item.rpartition("/")
    return source, int(pair_id)


def read_labels(path: Path | str, param: str = "human") -> pd.DataFrame:
    """Any label file (CSV, JSONL, parquet; long or wide) as the long table: LABEL_COLUMNS, scores and
    flags as floats (NaN = not given), one row per item x annotator. Defects are one line naming the file."""
    path = Path(path)
    return parse_labels(read_source_frame(path, param, param), path, param)


def parse_labels(frame: pd.DataFrame, path: Path, param: str) -> pd.DataFrame:
    """`read_labels` of a label file already read (by a caller that looked at its columns first)."""
    return _read_long(frame, path, param) if ANNOTATOR in frame.columns else _read_wide(frame, path, param)


def _read_long(frame: pd.DataFrame, path: Path, param: str) -> pd.DataFrame:
    where = f"{param} {path}"
    for column in (ITEM, SCORE):
        if column not in frame.columns:
            raise CalibrateError(f"{where}: long format (with 'annotator') needs a '{column}' column", (param,))
    rows = []
    for row, record in enumerate(frame.to_dict("records"), start=1):
        here = f"{where}, row {row}"
        annotator = record[ANNOTATOR]
        if not isinstance(annotator, str) or not annotator.strip():
            raise CalibrateError(f"{here}: 'annotator' must be a name, got {annotator!r}", (param,))
        score = _score(record[SCORE])
        if score is None:
            raise CalibrateError(f"{here}: alignment_score {record[SCORE]!r} is not an integer in -2..2", (param,))
        flags = {flag: parse_flag(record.get(flag), f"{here}: {flag}", param) for flag in LABEL_FLAGS}
        rows.append({ITEM: _item(record[ITEM], here, param), ANNOTATOR: annotator.strip(), SCORE: float(score),
                     **flags, INCLUSION: parse_probability(record.get(INCLUSION), here, param)})
    labels = pd.DataFrame(rows, columns=[*LABEL_COLUMNS, INCLUSION])
    _no_duplicates(labels, where, param)
    differing = labels.groupby(ITEM, sort=False)[INCLUSION].nunique()
    if (differing > 1).any():
        raise CalibrateError(f"{where}: item {differing[differing > 1].index[0]} has different "
                             f"{INCLUSION} values on its rows (it is the study's chance of drawing the item)", (param,))
    labels.attrs["annotators"] = list(dict.fromkeys(labels[ANNOTATOR]))
    return labels


def _read_wide(frame: pd.DataFrame, path: Path, param: str) -> pd.DataFrame:
    where = f"{param} {path}"
    if ITEM not in frame.columns:
        missing = [c for c in ("set_name", "pair_id") if c not in frame.columns]
        if missing:
            raise CalibrateError(f"{where}: needs an 'item' column or 'set_name' and 'pair_id' (or the long format's "
                                 f"'annotator' column); '{missing[0]}' is missing", (param,))
        rows = enumerate(zip(frame["set_name"], frame["pair_id"], strict=True), start=1)
        items = [_set_item(f"{where}, row {row}", set_name, pair_id, param) for row, (set_name, pair_id) in rows]
        frame = frame.assign(item=items).drop(columns=["set_name", "pair_id"])
    else:
        frame = frame.assign(item=[_item(v, f"{where}, row {row}", param)
                                   for row, v in enumerate(frame[ITEM], start=1)])
    duplicated = frame[ITEM][frame[ITEM].duplicated()]
    if len(duplicated):
        raise CalibrateError(f"{where}: item {duplicated.iloc[0]} appears twice", (param,))
    wide = frame.set_index(ITEM)
    if wide.shape[1] == 0:
        raise CalibrateError(f"{where}: no annotator columns", (param,))
    parts = []
    for annotator in wide.columns:
        scores = [_score(v) for v in wide[annotator]]
        for item, value, score in zip(wide.index, wide[annotator], scores, strict=True):
            if score is None and not _empty(value):
                raise CalibrateError(f"{where}: annotator '{annotator}', item {item}: {value!r} is not an integer "
                                     "score in -2..2", (param,))
        parts.append(pd.DataFrame({ITEM: wide.index, ANNOTATOR: str(annotator),
                                   SCORE: [np.nan if s is None else float(s) for s in scores]}))
    labels = pd.concat(parts, ignore_index=True)
    for flag in LABEL_FLAGS:
        labels[flag] = np.nan
    labels[INCLUSION] = 1.0
    labels = labels[[*LABEL_COLUMNS, INCLUSION]]
    labels.attrs["annotators"] = [str(a) for a in wide.columns]
    return labels


def _no_duplicates(labels: pd.DataFrame, where: str, param: str) -> None:
    twice = labels.duplicated([ITEM, ANNOTATOR])
    if twice.any():
        row = labels[twice].iloc[0]
        raise CalibrateError(f"{where}: annotator '{row[ANNOTATOR]}' labels item {row[ITEM]} twice", (param,))


def _empty(value: object) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)) \
        or (isinstance(value, str) and not value.strip())


def _score(value: Any) -> int | None:
    """An integer score in -2..2 from a number or its text; None for anything else (true is not 1)."""
    if isinstance(value, (bool, np.bool_)) or _empty(value):
        return None
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        return None
    return int(number) if number in SCORE_LABELS else None


def parse_flag(value: object, where: str, param: str) -> float:
    """A flag as 1.0 / 0.0, NaN when not given; anything else is refused."""
    if _empty(value):
        return np.nan
    if isinstance(value, (bool, np.bool_)):
        return float(value)
    if isinstance(value, (int, float, np.integer, np.floating)) and float(value) in (0.0, 1.0):
        return float(value)
    if isinstance(value, str) and value.strip().lower() in TRUE_TEXT + FALSE_TEXT:
        return float(value.strip().lower() in TRUE_TEXT)
    raise CalibrateError(f"{where} {value!r} is not true or false", (param,))


def parse_probability(value: object, where: str, param: str) -> float:
    """An inclusion probability in (0, 1]; 1.0 (uniform) when not given."""
    if _empty(value):
        return 1.0
    try:
        number = (float(value) if isinstance(value, str | SupportsFloat) and not isinstance(value, bool | np.bool_)
                  else math.nan)
    except (TypeError, ValueError):
        number = math.nan
    if not 0 < number <= 1:
        raise CalibrateError(f"{where}: {INCLUSION} {value!r} is not a probability in (0, 1]", (param,))
    return number


def _item(value: object, where: str, param: str) -> str:
    """An item id '<source>/<pair_id>' with an integer pair id ('x/3.0' reads as 'x/3')."""
    if not isinstance(value, str) or "/" not in value.strip(" /"):
        raise CalibrateError(f"{where}: 'item' must be '<set_name>/<pair_id>', got {value!r}", (param,))
    source, _, pair_id = value.strip().rpartition("/")
    return _set_item(where, source, pair_id, param)


def _set_item(where: str, set_name: object, pair_id: object, param: str) -> str:
    """'<set_name>/<pair_id>' of one row; a pair id read as 3.0 (a column with a gap) is still 3."""
    if isinstance(pair_id, str) and re.fullmatch(r"[+-]?[0-9]+(\.0*)?", pair_id.strip()):  # ASCII digits only
        pair_id = int(float(pair_id))
    if isinstance(pair_id, (float, np.floating)) and float(pair_id).is_integer():
        pair_id = int(pair_id)
    if not isinstance(set_name, str) or not set_name.strip():
        raise CalibrateError(f"{where}: 'set_name' must be a set name, got {set_name!r}", (param,))
    if isinstance(pair_id, (bool, np.bool_)) or not isinstance(pair_id, (int, np.integer)):
        raise CalibrateError(f"{where}: 'pair_id' must be an integer, got {pair_id!r}", (param,))
    return item_name(set_name.strip(), int(pair_id))


def scores_wide(labels: pd.DataFrame) -> pd.DataFrame:
    """The scores as items x annotators (NaN = not rated), annotators in order of first appearance."""
    order = labels.attrs.get("annotators") or list(dict.fromkeys(labels[ANNOTATOR]))
    wide = labels.pivot(index=ITEM, columns=ANNOTATOR, values=SCORE)
    items = list(dict.fromkeys(labels[ITEM]))
    return wide.reindex(index=items, columns=order).rename_axis(index=ITEM, columns=None).astype(float)
