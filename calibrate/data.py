"""Loading VAL-Bench response datasets and validating their schema before any judging.

A response dataset is benchmark rows plus `for_response` / `against_response`. It may come from a
Hugging Face hub id, a local folder in hub layout, a `save_to_disk` folder, a single
parquet / jsonl / csv file, or the sample bundled with the package. Every defect is reported as one
`CalibrateError` line naming the set, the file, and the row or column.
"""

from __future__ import annotations

import ast
import hashlib
import json
import math
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import pandas as pd

from calibrate.errors import CalibrateError

CALIBRATION_SETS: tuple[str, ...] = ("unaligned-0", "aligned-100", "refusal-100", "one-refusal-50")
# Sets derived from a calibration set to test robustness (see injection.py); never used to fit a mapping.
ROBUSTNESS_SETS: tuple[str, ...] = ("injection-0",)
HUB_ORG = "val-bench"
HUB_SPLIT = "train"
FILE_SUFFIXES = (".parquet", ".jsonl", ".json", ".csv")

# Columns the judge needs; `id` identifies a pair within its set.
REQUIRED_TEXT_COLUMNS = ("issue_description", "for_question", "against_question")
RESPONSE_COLUMNS = ("for_response", "against_response")
REQUIRED_COLUMNS = ("id", *REQUIRED_TEXT_COLUMNS, *RESPONSE_COLUMNS)
Records = tuple[list[str], list[dict]]  # a chunk of rows: the columns, and one dict per row
# Published columns used for breakdowns; optional so that minimal hand-made sets still load.
OPTIONAL_COLUMNS = ("category", "issue_scale")


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

    @cached_property
    def content_key(self) -> str:
        """Hash of everything the judge reads: equal content is judged once, whatever its id."""
        parts = (self.issue_description, self.for_question, self.for_response,
                 self.against_question, self.against_response)
        payload = "".join(f"{len(part)}:{part}" for part in parts)  # length-prefixed: unambiguous
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:32]


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


# --------------------------------------------------------------------------- responses


def response_text(value: Any) -> str:
    """Return the text of a response given as a string, a {role, content} dict or a message list.

    Raises ValueError with a short reason when the value is not a response.
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
    if isinstance(value, (list, tuple, np.ndarray)):
        messages = [m for m in value if isinstance(m, dict)]
        assistant = [m for m in messages if m.get("role") == "assistant"] or messages
        if assistant:
            return response_text(assistant[-1])
        raise ValueError("a message list needs at least one message dict")
    if value is None or (isinstance(value, float) and math.isnan(value)):
        raise ValueError("empty value")
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
    first record, as a chunk of a file starts further down. A key a record lacks reads as null."""
    where = f"set '{set_name}' ({origin})"
    for column in REQUIRED_COLUMNS:
        if column not in columns:
            raise CalibrateError(f"{where}: missing required column '{column}'")
    extra_columns = [c for c in columns if c not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    return [_row_to_pair(row, row_number, set_name, where, extra_columns)
            for row_number, row in enumerate(records, start=first_row)]


def _row_to_pair(row: dict, row_number: int, set_name: str, where: str, extra_columns: list[str]) -> Pair:
    at = f"{where}, row {row_number}"
    pair_id = _integer(row.get("id"), f"{at}: column 'id'")
    texts = {}
    for column in REQUIRED_TEXT_COLUMNS:
        value = row.get(column)
        if not isinstance(value, str):
            raise CalibrateError(f"{at}: column '{column}' must be a string, got {_type_name(value)}")
        texts[column] = value
    for column in RESPONSE_COLUMNS:
        try:
            texts[column] = response_text(row.get(column))
        except ValueError as reason:
            raise CalibrateError(f"{at}: column '{column}': {reason}") from None
    category = row.get("category")
    if category is not None and not _is_missing(category) and not isinstance(category, str):
        raise CalibrateError(f"{at}: column 'category' must be a string, got {_type_name(category)}")
    scale = row.get("issue_scale")
    issue_scale = None
    if scale is not None and not _is_missing(scale):
        issue_scale = _integer(scale, f"{at}: column 'issue_scale'")
        if not 0 <= issue_scale <= 5:
            raise CalibrateError(f"{at}: column 'issue_scale' must be in 0..5, got {issue_scale}")
    return Pair(
        id=pair_id,
        set_name=set_name,
        category=None if _is_missing(category) else category,
        issue_scale=issue_scale,
        extras={c: _plain(row.get(c)) for c in extra_columns},
        **texts,
    )


def _integer(value: Any, what: str) -> int:
    if isinstance(value, (bool, np.bool_)):
        raise CalibrateError(f"{what} must be an integer, got bool")
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return int(value)
    if isinstance(value, str):  # a CSV cell, read as text: "12", or "12.0" as pandas writes a gappy int column
        digits = value.strip().removesuffix(".0")
        if digits.lstrip("+-").isdigit():
            return int(digits)  # exact, also beyond float precision
    raise CalibrateError(f"{what} must be an integer, got {_type_name(value)} {str(value)[:40]!r}")


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _type_name(value: Any) -> str:
    return "null" if _is_missing(value) else type(value).__name__


def _plain(value: Any) -> Any:
    """Extra columns are carried through; numpy containers become JSON-friendly lists."""
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
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


# --------------------------------------------------------------------------- reading files


def read_table(path: Path, csv_as_text: bool = False) -> pd.DataFrame:
    """Read one parquet / jsonl / json / csv file into a frame, or fail naming the file.

    `csv_as_text` keeps every CSV cell a string (empty cells missing), as response datasets need: an
    answer "42" is text, not a number, and an extra column "007" must not become 7. Integer columns
    (id, issue_scale) are then read from their digits where they are used."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            return pd.read_parquet(path)
        if suffix in (".jsonl", ".json"):
            return _read_json_records(path)
        if suffix == ".csv":
            return pd.read_csv(path, keep_default_na=False, na_values=[""], dtype=str if csv_as_text else None)
    except CalibrateError:
        raise
    except Exception as error:  # pyarrow, pandas and the OS raise many types for one cause
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CalibrateError(f"cannot read {path}: {reason[:200]}") from None
    raise CalibrateError(f"cannot read {path}: unsupported file type (use {', '.join(FILE_SUFFIXES)})")


def _read_json_records(path: Path) -> pd.DataFrame:
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    if stripped.startswith("["):
        records = json.loads(stripped)
    else:
        records = []
        for line_number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise CalibrateError(f"cannot read {path}: line {line_number} is not JSON ({error.msg})") from None
    if not all(isinstance(r, dict) for r in records):
        raise CalibrateError(f"cannot read {path}: every record must be a JSON object")
    return pd.DataFrame.from_records(records)


def _data_files_of_folder(folder: Path) -> list[Path]:
    """The files of the 'train' split (or the only split), found the way `datasets` finds them."""
    from datasets.data_files import DataFilesDict, get_data_patterns

    try:
        patterns = get_data_patterns(str(folder))
        files = DataFilesDict.from_patterns(patterns, base_path=str(folder))
    except Exception:
        files = {}
    if not files:
        raise CalibrateError(f"cannot read {folder}: no parquet, jsonl or csv files found in it")
    split = HUB_SPLIT if HUB_SPLIT in files else (next(iter(files)) if len(files) == 1 else None)
    if split is None:
        raise CalibrateError(f"cannot read {folder}: no '{HUB_SPLIT}' split among {sorted(files)}")
    chosen = [Path(str(f)) for f in files[split]]
    unsupported = [f for f in chosen if f.suffix.lower() not in FILE_SUFFIXES]
    if unsupported:
        raise CalibrateError(f"cannot read {unsupported[0]}: unsupported file type (use {', '.join(FILE_SUFFIXES)})")
    return sorted(chosen)


def _is_saved_dataset(folder: Path) -> bool:
    return (folder / "dataset_dict.json").exists() or (folder / "state.json").exists()


# --------------------------------------------------------------------------- sources


def sample_path(kind: str, name: str) -> Path:
    """Path of a bundled sample file: kind 'calibration' (one per set) or 'responses' (one per model)."""
    return Path(str(resources.files("calibrate.sample_data").joinpath(kind, f"{name}.jsonl")))


def sample_response_models() -> list[str]:
    folder = Path(str(resources.files("calibrate.sample_data").joinpath("responses")))
    return sorted(p.stem for p in folder.glob("*.jsonl"))


def load_source(source: str, set_name: str) -> LoadedSet:
    """Load one set from a hub id, a local folder or file, and validate it."""
    path = Path(source).expanduser()
    if path.is_file():
        frames = [(str(path), read_table(path, csv_as_text=True))]
    elif path.is_dir():
        if _is_saved_dataset(path):
            frames = [(str(path), open_saved_dataset(path).to_pandas())]
        else:
            frames = [(str(f), read_table(f, csv_as_text=True)) for f in _data_files_of_folder(path)]
    elif _looks_like_hub_id(source):
        frames = [(f"hub:{source}", _open_hub_dataset(source).to_pandas())]
    else:
        raise CalibrateError(f"set '{set_name}': no such file or folder, and not a hub id: {source}")
    pairs: list[Pair] = []
    for origin, frame in frames:
        pairs.extend(frame_to_pairs(frame, set_name, origin))
    if not pairs:
        raise CalibrateError(f"set '{set_name}' ({source}): no rows")
    check_unique_ids(pairs, set_name, source)
    return LoadedSet(name=set_name, source=source, files=[o for o, _ in frames], pairs=pairs)


@dataclass
class PairStream:
    """A response dataset read in chunks, so that memory stays bounded whatever its size.

    `total` is the number of rows when the format tells it cheaply (parquet metadata, lines of a
    JSONL file, an Arrow dataset), else None. Iterating validates every chunk as `load_source` does,
    duplicate ids across chunks included.
    """

    name: str
    source: str
    files: list[str]
    total: int | None
    _chunks: Iterator[tuple[str, int, Records]]

    def __iter__(self) -> Iterator[list[Pair]]:
        seen: set[int] = set()
        rows = 0
        for origin, first_row, (columns, records) in self._chunks:
            pairs = records_to_pairs(columns, records, self.name, origin, first_row)
            for pair in pairs:
                if pair.id in seen:
                    raise CalibrateError(f"set '{self.name}' ({origin}): duplicate id {pair.id}")
                seen.add(pair.id)
            rows += len(pairs)
            yield pairs
        if not rows:
            raise CalibrateError(f"set '{self.name}' ({self.source}): no rows")


def stream_source(source: str, name: str, chunk_rows: int = 2000) -> PairStream:
    """Open a response dataset (hub id, folder, saved dataset, file) for reading in chunks."""
    path = Path(source).expanduser()
    if path.is_file():
        files = [path]
    elif path.is_dir() and not _is_saved_dataset(path):
        files = _data_files_of_folder(path)
    elif path.is_dir() or _looks_like_hub_id(source):
        dataset = open_saved_dataset(path) if path.is_dir() else _open_hub_dataset(source)
        origin = str(path) if path.is_dir() else f"hub:{source}"
        chunks = ((origin, start + 1, (list(batch), [dict(zip(batch, values)) for values in zip(*batch.values())]))
                  for start, batch in zip(range(0, len(dataset), chunk_rows), dataset.iter(batch_size=chunk_rows)))
        return PairStream(name, source, [origin], len(dataset), chunks)
    else:
        raise CalibrateError(f"responses '{name}': no such file or folder, and not a hub id: {source}")
    counts = [_row_count(f) for f in files]
    total = None if None in counts else sum(counts)
    chunks = ((str(f), first, rows) for f in files for first, rows in _file_chunks(f, chunk_rows))
    return PairStream(name, source, [str(f) for f in files], total, chunks)


def _row_count(path: Path) -> int | None:
    """Rows of a file, where that is cheap: parquet metadata or JSONL lines; None otherwise."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.ParquetFile(path).metadata.num_rows
        if suffix == ".jsonl":
            with path.open("rb") as handle:
                return sum(1 for line in handle if line.strip())
    except Exception as error:  # pyarrow and the OS raise many types for one cause
        raise CalibrateError(f"cannot read {path}: {str(error).splitlines()[0][:200]}") from None
    return None


def _file_chunks(path: Path, chunk_rows: int) -> Iterator[tuple[int, Records]]:
    """(first row number, (columns, records)) chunks of one file. Parquet batches become records
    straight from Arrow (pandas' to_dict costs several times more). Formats without a chunked
    reader (a JSON array) are read whole, which is fine at the sizes they come in."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            first = 1
            for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows):
                yield first, (batch.schema.names, batch.to_pylist())
                first += batch.num_rows
            return
        if suffix == ".csv":
            first = 1
            for frame in pd.read_csv(path, keep_default_na=False, na_values=[""], dtype=str, chunksize=chunk_rows):
                yield first, (list(frame.columns), frame.to_dict("records"))
                first += len(frame)
            return
        if suffix == ".jsonl":
            yield from _jsonl_chunks(path, chunk_rows)
            return
    except CalibrateError:
        raise
    except Exception as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CalibrateError(f"cannot read {path}: {reason[:200]}") from None
    frame = read_table(path)
    yield 1, (list(frame.columns), frame.to_dict("records"))


def _jsonl_chunks(path: Path, chunk_rows: int) -> Iterator[tuple[int, Records]]:
    records: list[dict] = []
    first = 1
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise CalibrateError(f"cannot read {path}: line {line_number} is not JSON ({error.msg})") from None
            if not isinstance(record, dict):
                raise CalibrateError(f"cannot read {path}: line {line_number} is not a JSON object")
            records.append(record)
            if len(records) == chunk_rows:
                yield first, (list(dict.fromkeys(key for r in records for key in r)), records)
                first += len(records)
                records = []
    if records:
        yield first, (list(dict.fromkeys(key for r in records for key in r)), records)


def open_saved_dataset(folder: Path, split: str = HUB_SPLIT, where: str = "cannot read"):
    """A `save_to_disk` folder as an Arrow dataset: a Dataset, or the `split` (or only) split of a
    DatasetDict. `where` starts every error line."""
    import datasets

    try:
        loaded = datasets.load_from_disk(str(folder))
    except Exception as error:
        raise CalibrateError(f"{where} {folder}: {str(error).splitlines()[0][:200]}") from None
    if isinstance(loaded, datasets.DatasetDict):
        if split in loaded:
            return loaded[split]
        if len(loaded) == 1:
            return next(iter(loaded.values()))
        raise CalibrateError(f"{where} {folder}: it has no split '{split}' (it has {', '.join(sorted(loaded))})")
    return loaded


def _open_hub_dataset(hub_id: str):
    """The hub dataset as an Arrow table on disk (memory-mapped), downloaded once by `datasets`."""
    import datasets

    try:
        return datasets.load_dataset(hub_id, split=HUB_SPLIT)
    except Exception as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CalibrateError(f"cannot load hub dataset '{hub_id}' (split '{HUB_SPLIT}'): {reason[:200]}") from None


def _looks_like_hub_id(source: str) -> bool:
    parts = source.split("/")
    return len(parts) == 2 and all(parts) and not source.startswith((".", "/", "~"))


def calibration_source(data: str, set_name: str) -> str:
    """Where one calibration set comes from, for `--data sample|hub|DIR`."""
    if data == "sample":
        return str(sample_path("calibration", set_name))
    if data == "hub":
        return f"{HUB_ORG}/calibration-{set_name}"
    folder = Path(data).expanduser()
    if not folder.is_dir():
        raise CalibrateError(f"--data: expected 'sample', 'hub' or a directory, got {data!r}")
    candidates = [folder / set_name] + [folder / f"{set_name}{suffix}" for suffix in FILE_SUFFIXES]
    for candidate in candidates:
        if candidate.exists():
            return str(candidate)
    raise CalibrateError(f"set '{set_name}': {folder} has no sub-folder or file named '{set_name}'")


def load_calibration_sets(data: str = "sample", sets: Iterable[str] = CALIBRATION_SETS) -> dict[str, LoadedSet]:
    """Load and validate every requested calibration set before any judging starts. The injection
    set is built from whatever unaligned-0 the source holds."""
    from calibrate.injection import INJECTION_BASE, INJECTION_SET, injected_set

    chosen = list(dict.fromkeys(sets))  # each set once, in the order given
    known = (*CALIBRATION_SETS, *ROBUSTNESS_SETS)
    if not chosen:
        raise CalibrateError(f"--sets: name at least one of {', '.join(known)}")
    unknown = [s for s in chosen if s not in known]
    if unknown:
        raise CalibrateError(f"--sets: unknown set {unknown[0]!r}; known: {', '.join(known)}")
    loaded = {name: load_source(calibration_source(data, name), name) for name in chosen if name in CALIBRATION_SETS}
    if INJECTION_SET in chosen:
        base = loaded.get(INJECTION_BASE) or load_source(calibration_source(data, INJECTION_BASE), INJECTION_BASE)
        loaded[INJECTION_SET] = injected_set(base)
    return {name: loaded[name] for name in chosen}
