"""Benchmark prompts: the rows `calibrate respond` answers (id, issue and both questions), from
any source the resolver knows, validated before a single request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from calibrate.data.pairs import integer_value, plain_value, type_name
from calibrate.data.sources import resolve_source
from calibrate.errors import CalibrateError

BENCHMARK_HUB_ID = "val-bench/VAL-Bench"
DEFAULT_SPLIT = "test"
REQUIRED_PROMPT_COLUMNS = ("id", "issue_description", "for_question", "against_question")


@dataclass
class PromptRows:
    """The benchmark rows to answer, validated, in source order, and where they came from."""

    source: str
    split: str
    files: list[str]
    total_rows: int  # rows in the source before --limit
    rows: list[dict[str, Any]]  # column -> plain Python value (numpy containers turned into lists)
    columns: list[str]  # source column order


def load_prompts(source: str, split: str = DEFAULT_SPLIT, limit: int | None = None,
                 seed: int | None = None) -> PromptRows:
    """Read the rows to answer from a hub id (`datasets.load_dataset(id, split=split)`), a local
    parquet / jsonl / json / csv file, a folder (hub layout: the files of `split`, or of its only
    split; or a `save_to_disk` folder), and validate them. `limit` keeps the first N rows in source
    order, or, with `seed`, a seeded random N (the first N of a seeded permutation, so a larger N with
    the same seed extends a smaller one), kept in source order."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise CalibrateError(f"limit must be a positive integer, got {limit!r}", ("limit",))
    frames = resolve_source(source, "prompts", split, param="prompts").frames(csv_as_text=False)
    columns: list[str] = []
    located: list[tuple[str, int, dict]] = []
    for origin, frame in frames:
        missing = [c for c in REQUIRED_PROMPT_COLUMNS if c not in frame.columns]
        if missing:
            raise CalibrateError(f"prompts {origin}: missing required column '{missing[0]}'", ("prompts",))
        columns.extend(c for c in frame.columns if c not in columns)
        located.extend((origin, number, row) for number, row in enumerate(frame.to_dict("records"), start=1))
    if not located:
        raise CalibrateError(f"prompts {source}: no rows", ("prompts",))
    total = len(located)
    if limit is not None and limit < total:
        if seed is None:
            located = located[:limit]
        else:
            import numpy as np

            chosen = sorted(np.random.default_rng(seed).permutation(total)[:limit].tolist())
            located = [located[i] for i in chosen]
    rows: list[dict] = []
    seen: dict[int, str] = {}
    for origin, number, row in located:
        at = f"prompts {origin}, row {number}"
        row = {key: plain_value(value) for key, value in row.items()}
        row["id"] = integer_value(row["id"], f"{at}: column 'id'")
        for column in REQUIRED_PROMPT_COLUMNS[1:]:
            value = row[column]
            if not isinstance(value, str) or (column != "issue_description" and not value.strip()):
                got = "an empty string" if isinstance(value, str) else type_name(value)
                kind = "a string" if column == "issue_description" else "a non-empty string"
                raise CalibrateError(f"{at}: column '{column}' must be {kind}, got {got}")
        if row["id"] in seen:
            raise CalibrateError(f"{at}: duplicate id {row['id']} (first at {seen[row['id']]})")
        seen[row["id"]] = f"{origin}, row {number}"
        rows.append(row)
    return PromptRows(source=source, split=split, files=[origin for origin, _ in frames], total_rows=total,
                      rows=rows, columns=columns)
