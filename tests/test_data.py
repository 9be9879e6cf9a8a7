"""Loaders for every source kind, response normalisation, and schema errors that name set, file and column."""

from __future__ import annotations

import json

import datasets
import pandas as pd
import pytest

from calibrate.data.calibration import (
    CALIBRATION_SETS,
    calibration_source,
    load_calibration_sets,
    sample_path,
    sample_response_models,
)
from calibrate.data.pairs import response_text
from calibrate.data.sources import load_source
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
