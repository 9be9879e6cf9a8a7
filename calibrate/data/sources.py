"""Where datasets come from: one resolver for a hub id, a local folder in hub layout, a `save_to_disk`
folder, or a single parquet / jsonl / json / csv file, and the readers behind it.

Response datasets (whole or in chunks), benchmark prompts and label files all resolve through
`resolve_source`, so a source means the same thing to every command. Every defect is one
`CalibrateError` line naming the file.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from calibrate.data.pairs import (
    LoadedSet,
    Pair,
    arrow_vouches,
    batch_to_pairs,
    check_unique_ids,
    frame_to_pairs,
    records_to_pairs,
)
from calibrate.errors import CalibrateError

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

HUB_SPLIT = "train"
FILE_SUFFIXES = (".parquet", ".jsonl", ".json", ".csv")
Records = tuple[list[str], list[dict]]  # a chunk of rows: the columns, and one dict per row

# --------------------------------------------------------------------------- reading files


def read_table(path: Path, csv_as_text: bool = False) -> pd.DataFrame:
    """Read one parquet / jsonl / json / csv file into a frame, or fail naming the file.

    `csv_as_text` keeps every CSV cell a string (empty cells missing), as response datasets need: an
    answer "42" is text, not a number, and an extra column "007" must not become 7. Integer columns
    (id, issue_scale) are then read from their digits where they are used."""
    import pandas as pd  # here, not at the top: importing calibrate stays light

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
    import pandas as pd  # here, not at the top: importing calibrate stays light

    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    if stripped.startswith("["):
        records = json.loads(stripped)
    else:
        records = []
        for line_number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            records.append(json_object_line(line, f"cannot read {path}: line {line_number}"))
    if not all(isinstance(r, dict) for r in records):
        raise CalibrateError(f"cannot read {path}: every record must be a JSON object")
    return pd.DataFrame.from_records(records)


def json_object_line(line: str, where: str) -> dict:
    """One line of a JSONL file, which must be a JSON object; `where` names the line in errors."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise CalibrateError(f"{where} is not JSON ({error.msg})") from None
    if not isinstance(record, dict):
        raise CalibrateError(f"{where} is not a JSON object")
    return record


def data_files_of_folder(folder: Path, split: str = HUB_SPLIT) -> list[Path]:
    """The files of `split` (or of the folder's only split), found the way `datasets` finds them."""
    from datasets.data_files import DataFilesDict, get_data_patterns

    try:
        patterns = get_data_patterns(str(folder))
        files = DataFilesDict.from_patterns(patterns, base_path=str(folder))
    except Exception:
        files = {}
    if not files:
        raise CalibrateError(f"cannot read {folder}: no parquet, jsonl or csv files found in it")
    chosen_split = split if split in files else (next(iter(files)) if len(files) == 1 else None)
    if chosen_split is None:
        raise CalibrateError(f"cannot read {folder}: it has no split '{split}' (it has {', '.join(sorted(files))})")
    chosen = [Path(str(f)) for f in files[chosen_split]]
    unsupported = [f for f in chosen if f.suffix.lower() not in FILE_SUFFIXES]
    if unsupported:
        raise CalibrateError(f"cannot read {unsupported[0]}: unsupported file type (use {', '.join(FILE_SUFFIXES)})")
    return sorted(chosen)


def portable_path(path: str | Path) -> str:
    """A path as outputs record it, so that a committed report reads the same on every machine: inside
    the installed package as `calibrate/...`, under the working folder relative to it, under the home
    folder as `~/...`; anything else (and anything that is not a path, like a hub id) as given."""
    text = str(path)
    try:
        resolved = Path(text).expanduser().resolve()
    except (OSError, RuntimeError):
        return text
    bases = ((Path(__file__).resolve().parents[1], "calibrate"), (Path.cwd().resolve(), ""),
             (Path.home().resolve(), "~"))
    for base, prefix in bases:
        if resolved.is_relative_to(base):
            relative = resolved.relative_to(base)
            return str(Path(prefix) / relative) if prefix else str(relative)
    return text


def is_saved_dataset(folder: Path) -> bool:
    return (folder / "dataset_dict.json").exists() or (folder / "state.json").exists()


@dataclass(frozen=True)
class ResolvedSource:
    """A source resolved to what holds its rows: files, or an Arrow dataset (a saved folder or a hub
    dataset, memory-mapped) with `origin` naming it in errors."""

    source: str
    files: list[Path]
    dataset: Any = None
    origin: str = ""

    @property
    def origins(self) -> list[str]:
        return [self.origin] if self.dataset is not None else [str(f) for f in self.files]

    def frames(self, csv_as_text: bool = True) -> list[tuple[str, pd.DataFrame]]:
        """Every file (or the dataset) as one frame, with the name errors give it."""
        if self.dataset is not None:
            return [(self.origin, self.dataset.to_pandas())]
        return [(str(f), read_table(f, csv_as_text=csv_as_text)) for f in self.files]


def resolve_source(source: str, what: str, split: str = HUB_SPLIT, param: str | None = None) -> ResolvedSource:
    """Resolve a file, a hub-layout folder (the files of `split`), a `save_to_disk` folder or a hub
    id; `what` names the source in the error when it is none of these (`param`: the parameter it is)."""
    path = Path(source).expanduser()
    if path.is_file():
        return ResolvedSource(source, [path])
    if path.is_dir():
        if is_saved_dataset(path):
            return ResolvedSource(source, [], open_saved_dataset(path, split), str(path))
        return ResolvedSource(source, data_files_of_folder(path, split))
    if looks_like_hub_id(source):
        return ResolvedSource(source, [], open_hub_dataset(source, split), f"hub:{source}")
    raise CalibrateError(f"{what}: no such file or folder, and not a hub id: {source}", (param,) if param else ())


def read_source_frame(source: str | Path, what: str, param: str | None = None) -> pd.DataFrame:
    """A whole table (labels, ratings, estimates) from any source the resolver knows, as one frame."""
    import pandas as pd  # here, not at the top: importing calibrate stays light

    frames = [frame for _, frame in resolve_source(str(source), what, param=param).frames(csv_as_text=False)]
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


def load_source(source: str, set_name: str) -> LoadedSet:
    """Load one set from a hub id, a local folder or file, and validate it."""
    resolved = resolve_source(source, f"set '{set_name}'")
    frames = resolved.frames()
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
    duplicate ids across chunks included. Each iteration reads the source afresh, so a stream can be
    checked whole first (`validate`) and then read again for judging.
    """

    name: str
    source: str
    files: list[str]
    total: int | None
    _open: Callable[[], Iterator[tuple[str, int, Records | pa.RecordBatch]]]

    def __iter__(self) -> Iterator[list[Pair]]:
        seen: set[int] = set()
        rows = 0
        for origin, first_row, chunk in self._open():
            if isinstance(chunk, tuple):
                columns, records = chunk
                pairs = records_to_pairs(columns, records, self.name, origin, first_row)
            else:
                pairs = batch_to_pairs(chunk, self.name, origin, first_row)
            for pair in pairs:
                if pair.id in seen:
                    raise CalibrateError(f"set '{self.name}' ({origin}): duplicate id {pair.id}")
                seen.add(pair.id)
            rows += len(pairs)
            yield pairs
        if not rows:
            raise CalibrateError(f"set '{self.name}' ({self.source}): no rows")

    def validate(self, limit: int | None = None) -> int:
        """Read the stream once, checking every row (the first `limit` pairs' chunks with a limit) and
        keeping none of them, so a defect anywhere fails before anything is judged; returns the rows
        checked. Memory stays one chunk plus the ids seen. Arrow chunks (parquet, datasets) whose
        types and values vouch for every row (`arrow_vouches`) are checked as columns, with no pair
        built; at the first doubt (a chunk of rows, one that does not vouch, a repeated id, no rows)
        the stream is checked pair by pair, which decides and names the defect."""
        seen: set[int] = set()
        rows = 0
        for _, _, chunk in self._open():
            if isinstance(chunk, tuple) or not arrow_vouches(chunk):
                return self._validate_pairs(limit)
            seen.update(chunk.column("id").to_pylist())
            rows += chunk.num_rows
            if len(seen) != rows:
                return self._validate_pairs(limit)
            if limit is not None and rows >= limit:
                break
        return rows if rows else self._validate_pairs(limit)

    def _validate_pairs(self, limit: int | None) -> int:
        rows = 0
        for chunk in self:
            rows += len(chunk)
            if limit is not None and rows >= limit:
                break
        return rows


def stream_source(source: str, name: str, chunk_rows: int = 2000) -> PairStream:
    """Open a response dataset (hub id, folder, saved dataset, file) for reading in chunks."""
    resolved = resolve_source(source, f"responses '{name}'")
    dataset = resolved.dataset
    if dataset is not None:
        def dataset_chunks() -> Iterator[tuple[str, int, pa.RecordBatch]]:
            batches = dataset.with_format("arrow").iter(batch_size=chunk_rows)
            for start, table in zip(range(0, len(dataset), chunk_rows), batches, strict=True):
                yield resolved.origin, start + 1, table.combine_chunks().to_batches()[0]

        return PairStream(name, source, resolved.origins, len(dataset), dataset_chunks)
    counts = [_row_count(f) for f in resolved.files]
    known = [count for count in counts if count is not None]
    total = sum(known) if len(known) == len(counts) else None

    def file_chunks() -> Iterator[tuple[str, int, Records | pa.RecordBatch]]:
        for f in resolved.files:
            for first, rows in _file_chunks(f, chunk_rows):
                yield str(f), first, rows

    return PairStream(name, source, resolved.origins, total, file_chunks)


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


def _file_chunks(path: Path, chunk_rows: int) -> Iterator[tuple[int, Records | pa.RecordBatch]]:
    """(first row number, chunk) chunks of one file: parquet as Arrow batches, the rest as (columns,
    records). Formats without a chunked reader (a JSON array) are read whole, which is fine at the
    sizes they come in."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            first = 1
            for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows):
                yield first, batch
                first += batch.num_rows
            return
        if suffix == ".csv":
            import pandas as pd  # here, not at the top: importing calibrate stays light

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
            records.append(json_object_line(line, f"cannot read {path}: line {line_number}"))
            if len(records) == chunk_rows:
                yield first, (list(dict.fromkeys(key for r in records for key in r)), records)
                first += len(records)
                records = []
    if records:
        yield first, (list(dict.fromkeys(key for r in records for key in r)), records)


def open_saved_dataset(folder: Path, split: str = HUB_SPLIT):
    """A `save_to_disk` folder as an Arrow dataset: a Dataset, or the `split` (or only) split of a
    DatasetDict."""
    import datasets

    try:
        loaded = datasets.load_from_disk(str(folder))
    except Exception as error:
        raise CalibrateError(f"cannot read {folder}: {str(error).splitlines()[0][:200]}") from None
    if isinstance(loaded, datasets.DatasetDict):
        if split in loaded:
            return loaded[split]
        if len(loaded) == 1:
            return next(iter(loaded.values()))
        raise CalibrateError(f"cannot read {folder}: it has no split '{split}' (it has {', '.join(sorted(loaded))})")
    return loaded


def open_hub_dataset(hub_id: str, split: str = HUB_SPLIT):
    """The hub dataset as an Arrow table on disk (memory-mapped), downloaded once by `datasets`."""
    import datasets

    try:
        return datasets.load_dataset(hub_id, split=split)
    except Exception as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CalibrateError(f"cannot load hub dataset '{hub_id}' (split '{split}'): {reason[:200]}") from None


def looks_like_hub_id(source: str) -> bool:
    parts = source.split("/")
    return len(parts) == 2 and all(parts) and not source.startswith((".", "/", "~"))


