"""Loaders for every source kind, response normalisation, and schema errors that name set, file and column."""

from __future__ import annotations

import json

import datasets
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from calibrate.data.calibration import (
    CALIBRATION_SETS,
    calibration_source,
    load_calibration_sets,
    sample_path,
    sample_response_models,
)
from calibrate.data.pairs import arrow_vouches, batch_to_pairs, records_to_pairs, response_text
from calibrate.data.sources import load_source, stream_source
from calibrate.errors import CalibrateError
from tests.fakes.calibration_sets import sample_frame, write_hub_layout


def frame(n: int = 3, **overrides) -> pd.DataFrame:
    rows = [{
        "id": i, "issue_description": f"Issue {i}", "for_question": f"Explain why {i}.",
        "against_question": f"Explain why not {i}.", "category": "Politics", "issue_scale": i % 6,
        "for_response": {"role": "assistant", "content": f"For {i}."},
        "against_response": {"role": "assistant", "content": f"Against {i}."},
        "reasoning": f"extra {i}",
    } for i in range(n)]
    result = pd.DataFrame(rows)
    for column, value in overrides.items():
        result[column] = value
    return result


@pytest.mark.parametrize("value, text", [
    ("plain", "plain"),
    ({"role": "assistant", "content": "dict"}, "dict"),
    ('{"role": "assistant", "content": "json in a csv cell"}', "json in a csv cell"),
    ("{'role': 'assistant', 'content': 'python literal'}", "python literal"),
    ([{"role": "user", "content": "q"}, {"role": "assistant", "content": "last"}], "last"),
    ("{not a message} but text", "{not a message} but text"),
    ("", ""),
    (None, ""),  # a null cell is an answer never given: it reads as the empty placeholder, not as an error
    (float("nan"), ""),
])
def test_response_text_accepts_every_published_shape(value, text):
    assert response_text(value) == text


@pytest.mark.parametrize("value", [3, {"role": "assistant"}, []])
def test_response_text_rejects_non_responses(value):
    with pytest.raises(ValueError):
        response_text(value)


@pytest.mark.parametrize("suffix", ["parquet", "jsonl", "csv"])
def test_single_files_load_with_extras_carried_through(tmp_path, suffix):
    path = tmp_path / f"set.{suffix}"
    data = frame()
    if suffix == "parquet":
        data.to_parquet(path)
    elif suffix == "jsonl":
        data.to_json(path, orient="records", lines=True)
    else:
        data.assign(for_response=data["for_response"].map(json.dumps)).to_csv(path, index=False)
    loaded = load_source(str(path), "aligned-100")
    assert [p.id for p in loaded.pairs] == [0, 1, 2]
    assert loaded.pairs[1].for_response == "For 1."
    assert loaded.pairs[1].against_response == "Against 1."
    assert loaded.pairs[2].issue_scale == 2 and loaded.pairs[2].category == "Politics"
    assert loaded.pairs[2].extras == {"reasoning": "extra 2"}
    assert loaded.files == [str(path)]


def test_hub_layout_folder_with_shards_and_splits(tmp_path):
    folder = tmp_path / "set" / "data"
    folder.mkdir(parents=True)
    frame(6).iloc[:3].to_parquet(folder / "train-00000-of-00002.parquet")
    frame(6).iloc[3:].to_parquet(folder / "train-00001-of-00002.parquet")
    frame(2).to_parquet(folder / "test-00000-of-00001.parquet")
    loaded = load_source(str(tmp_path / "set"), "unaligned-0")
    assert sorted(p.id for p in loaded.pairs) == list(range(6))  # the train split only
    assert len(loaded.files) == 2


def test_plain_folder_of_jsonl_files(tmp_path):
    (tmp_path / "set").mkdir()
    frame(4).to_json(tmp_path / "set" / "part.jsonl", orient="records", lines=True)
    assert len(load_source(str(tmp_path / "set"), "refusal-100").pairs) == 4


@pytest.mark.parametrize("as_dict", [False, True])
def test_save_to_disk_folder(tmp_path, as_dict):
    dataset = datasets.Dataset.from_pandas(frame(5))
    (datasets.DatasetDict({"train": dataset}) if as_dict else dataset).save_to_disk(str(tmp_path / "saved"))
    loaded = load_source(str(tmp_path / "saved"), "aligned-100")
    assert [p.id for p in loaded.pairs] == [0, 1, 2, 3, 4]
    assert loaded.pairs[0].for_response == "For 0."


def test_bundled_sample_meets_its_promises():
    loaded = load_calibration_sets("sample")
    assert list(loaded) == list(CALIBRATION_SETS)
    for loaded_set in loaded.values():
        assert len(loaded_set.pairs) >= 30
        assert "for_prompt" in loaded_set.pairs[0].extras  # published extra columns survive
    models = sample_response_models()
    responses = [load_source(str(sample_path("responses", m)), "responses") for m in models]
    pairs = [p for r in responses for p in r.pairs]
    assert len(models) >= 2 and len(pairs) >= 200
    assert len({p.category for p in pairs}) >= 8
    assert {p.issue_scale for p in pairs} == {0, 1, 2, 3, 4, 5}
    constructions = " ".join(p.extras["construction"] for p in pairs)
    assert "refusal" in constructions and "noinfo" in constructions


def test_data_directory_of_hub_layout_folders(tmp_path):
    root = write_hub_layout(tmp_path / "cal")
    loaded = load_calibration_sets(str(root))
    sample = load_calibration_sets("sample")
    for name in CALIBRATION_SETS:
        assert {p.content_key for p in loaded[name].pairs} == {p.content_key for p in sample[name].pairs}
        assert loaded[name].fingerprint == sample[name].fingerprint


def test_hub_id_fails_cleanly_offline():
    """Loading from a reachable hub is tested end to end in test_cli against a loopback hub."""
    with pytest.raises(CalibrateError, match="cannot load hub dataset 'val-bench/calibration-aligned-100'"):
        load_source(calibration_source("hub", "aligned-100"), "aligned-100")


@pytest.mark.parametrize("mutate, message", [
    (lambda f: f.drop(columns=["against_response"]), "missing required column 'against_response'"),
    (lambda f: f.assign(id=["a", "b", "c"]), "row 1: column 'id' must be an integer"),
    (lambda f: f.assign(for_question=[1, 2, 3]), "row 1: column 'for_question' must be a string"),
    (lambda f: f.assign(for_response=[1, 2, 3]), "row 1: column 'for_response'"),
    (lambda f: f.assign(issue_scale=[0, 9, 1]), "row 2: column 'issue_scale' must be in 0..5"),
    (lambda f: f.assign(id=[1, 1, 2]), "duplicate id 1"),
])
def test_schema_errors_name_set_file_and_column(tmp_path, mutate, message):
    path = tmp_path / "bad.parquet"
    mutate(frame()).to_parquet(path)
    with pytest.raises(CalibrateError) as error:
        load_source(str(path), "aligned-100")
    text = str(error.value)
    assert message in text and "aligned-100" in text
    if "duplicate" not in message:
        assert str(path) in text
    assert "\n" not in text


def test_unreadable_and_missing_sources(tmp_path):
    corrupt = tmp_path / "broken.parquet"
    corrupt.write_bytes(b"PAR1 definitely not parquet")
    with pytest.raises(CalibrateError, match=f"cannot read {corrupt}"):
        load_source(str(corrupt), "aligned-100")
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"id": 1}\n{oops\n')
    with pytest.raises(CalibrateError, match="line 2 is not JSON"):
        load_source(str(bad_json), "aligned-100")
    with pytest.raises(CalibrateError, match="no such file or folder"):
        load_source(str(tmp_path / "absent.parquet"), "aligned-100")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CalibrateError, match="no parquet, jsonl or csv files"):
        load_source(str(tmp_path / "empty"), "aligned-100")


def test_data_directory_must_hold_every_requested_set(tmp_path):
    write_hub_layout(tmp_path / "cal", {"aligned-100": sample_frame("aligned-100")})
    assert list(load_calibration_sets(str(tmp_path / "cal"), ["aligned-100"])) == ["aligned-100"]
    with pytest.raises(CalibrateError, match="no sub-folder or file named 'unaligned-0'"):
        load_calibration_sets(str(tmp_path / "cal"))
    with pytest.raises(CalibrateError, match="unknown set 'aligned-99'"):
        load_calibration_sets("sample", ["aligned-99"])
    with pytest.raises(CalibrateError, match="name at least one"):
        load_calibration_sets("sample", [])
    assert list(load_calibration_sets("sample", ["aligned-100", "aligned-100"])) == ["aligned-100"]


def _batch(**columns) -> pa.RecordBatch:
    """A response batch (3 rows, messages as structs) with some columns replaced by Arrow arrays."""
    base = {"id": pa.array([1, 2, 3]), "issue_description": pa.array(["i1", "i2", "i3"]),
            "for_question": pa.array(["f1", "f2", "f3"]), "against_question": pa.array(["a1", "a2", "a3"]),
            "category": pa.array(["c", None, "c"]), "issue_scale": pa.array([0, None, 5]),
            "for_response": pa.array([{"role": "assistant", "content": "yes"}, None,
                                      {"role": "assistant", "content": "No response"}]),
            "against_response": pa.array(['{"role": "assistant", "content": "json"}', None, ""]),
            "notes": pa.array([[1, 2], None, []])}
    base.update(columns)
    return pa.RecordBatch.from_pydict({name: array for name, array in base.items() if array is not None})


@pytest.mark.parametrize("columns, vouched", [
    ({}, True),  # built a column at a time
    ({"id": pa.array([1, 2, 3], pa.uint8()), "category": pa.array([None, None, None]), "issue_scale": None}, True),
    ({"for_response": pa.array(["a", "b", "c"], pa.large_string()), "notes": None}, True),
    ({"id": pa.array([1.0, 2.0, 3.0])}, False),  # the rest: the row checks decide
    ({"id": pa.array([1, None, 3])}, False),
    ({"issue_description": pa.array(["i1", None, "i3"])}, False),
    ({"issue_scale": pa.array([0, 6, 1])}, False),
    ({"issue_scale": pa.array([-1, None, 1])}, False),
    ({"issue_scale": pa.array(["1", "2", "3"])}, False),
    ({"category": pa.array([1, 2, 3])}, False),
    ({"for_response": pa.array([{"role": "assistant", "content": None}, None, None])}, False),
    ({"for_response": pa.array([{"role": "assistant", "text": "x"}, None, None])}, False),
    ({"for_response": pa.array([[{"role": "assistant", "content": "last"}], None, []])}, False),
    ({"against_response": pa.array([1, 2, 3])}, False),
    ({"against_question": pa.array(["a", "b", "c"]).dictionary_encode()}, False),
    ({"against_question": None}, False),
])
def test_arrow_batches_load_as_their_rows_do(columns, vouched):
    """A batch's pairs are those of its rows (`records_to_pairs`), or the same one-line error, whether
    its types vouch for every row (built a column at a time) or not; validating a parquet file agrees."""
    batch = _batch(**columns)

    def read(load):
        try:
            return [(pair, pair.extras) for pair in load()]
        except CalibrateError as error:
            return str(error)

    by_rows = read(lambda: records_to_pairs(batch.schema.names, batch.to_pylist(), "s", "f", 4))
    assert read(lambda: batch_to_pairs(batch, "s", "f", 4)) == by_rows
    assert arrow_vouches(batch) == vouched
    if not isinstance(by_rows, str) and not columns:
        assert [pair.for_response for pair, _ in by_rows] == ["yes", "", "No response"]
        assert [pair.extras for pair, _ in by_rows] == [{"notes": [1, 2]}, {"notes": None}, {"notes": []}]


@pytest.mark.parametrize("tables, expected", [
    ([{}], "3"), ([{}, {"id": pa.array([4, 5, 1])}], "duplicate id 1"),
    ([{}, {"issue_scale": pa.array([0, 9, 1])}], "row 5: column 'issue_scale' must be in 0..5, got 9"),
    ([{"id": pa.array([1.0, 2.0, 3.0])}], "3")])
def test_validating_a_parquet_file_checks_what_reading_it_checks(tmp_path, tables, expected):
    """`PairStream.validate` (columns checked without building pairs) fails exactly where reading the
    pairs fails, with the same error, or counts the same rows."""
    path = tmp_path / "r.parquet"
    with pq.ParquetWriter(path, _batch().schema if len(tables) > 1 else _batch(**tables[0]).schema) as writer:
        for columns in tables:
            writer.write_batch(_batch(**columns))

    def pairs_until(stream, limit):  # what the judging reads: whole chunks until the limit is reached
        rows = 0
        for chunk in stream:
            rows += len(chunk)
            if limit is not None and rows >= limit:
                break
        return rows

    def outcome(check):
        try:
            return check(stream_source(str(path), "s", chunk_rows=3))
        except CalibrateError as error:
            return str(error)

    for limit in (None, 2):
        assert (outcome(lambda stream, limit=limit: stream.validate(limit))
                == outcome(lambda stream, limit=limit: pairs_until(stream, limit)))
    assert str(outcome(lambda stream: stream.validate())).endswith(expected)
