"""Property-based robustness tests (hypothesis) of every loader and parser.

Every generated input must end in (a) a correct result, (b) a typed, counted per-pair failure, or
(c) one CalibrateError line naming the file / row / column. Never another exception type, never a
silently altered value.
"""

from __future__ import annotations

import csv
import json
import math
import tempfile
from pathlib import Path

import orjson
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from calibrate.data.labels import read_labels, scores_wide
from calibrate.data.pairs import REQUIRED_COLUMNS, records_to_pairs, response_text
from calibrate.data.sources import load_source, read_table, stream_source
from calibrate.data.tables import load_ratings
from calibrate.errors import CalibrateError
from calibrate.judging.base import (
    JUDGE_FIELDS,
    PARSE_STATUSES,
    PairView,
    Verdict,
    extract_json,
    validate_fields,
)
from calibrate.judging.openai_backend import read_completion
from calibrate.judging.prompt import load_prompt
from tests.inprocess import cli as run_cli

REPO = Path(__file__).resolve().parent.parent
# database=None: no .hypothesis folder in the working tree
FAST = settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
FILES = settings(max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

# --------------------------------------------------------------------------- strategies

texts = st.text(max_size=40)
# Text that no loader can mistake for anything but text (CSV infers numbers, booleans and nulls).
words = st.text(alphabet=st.sampled_from("abcdefghijklmnopqrstuvwxyz ÄéßЖ漢🙂.,!?-'\""), min_size=1, max_size=30).map(
    lambda s: "w" + s)
plain_answers = texts.filter(lambda s: not s.strip().startswith("{"))
message = st.builds(lambda c: {"role": "assistant", "content": c}, texts)
message_list = st.builds(lambda q, a: [{"role": "user", "content": q}, {"role": "assistant", "content": a}],
                         texts, texts)
responses = st.one_of(plain_answers, message, message_list)
int64 = st.integers(-2**63, 2**63 - 1)  # what every format (orjson, parquet) can hold
junk = st.one_of(st.none(), int64, st.floats(), st.booleans(), st.binary(max_size=10),
                 st.lists(int64, max_size=3), st.dictionaries(st.text(max_size=5), int64, max_size=3),
                 st.just(float("nan")), st.just([]), st.just({"content": 5}))


def expected_text(value) -> str:
    """The answer text a response value stands for (only for the shapes the strategies make)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return value["content"]
    return value[-1]["content"]


@st.composite
def good_rows(draw, min_size=1, max_size=8, response=responses, text=texts):
    ids = draw(st.lists(st.integers(-2**53, 2**53), min_size=min_size, max_size=max_size, unique=True))
    return [{"id": i, "issue_description": draw(text), "for_question": draw(text), "against_question": draw(text),
             "for_response": draw(response), "against_response": draw(response),
             "category": draw(st.none() | text), "issue_scale": draw(st.none() | st.integers(0, 5)),
             "notes": draw(st.none() | text)} for i in ids]


def check_pairs(pairs, rows) -> None:
    assert len(pairs) == len(rows)
    for pair, row in zip(pairs, rows, strict=True):
        assert pair.id == row["id"]
        for column in ("issue_description", "for_question", "against_question"):
            assert getattr(pair, column) == row[column]
        assert pair.for_response == expected_text(row["for_response"])
        assert pair.against_response == expected_text(row["against_response"])
        assert pair.category == row["category"]
        assert pair.issue_scale == row["issue_scale"]


def one_line(error: CalibrateError, *fragments: str) -> str:
    text = str(error)
    assert text and "\n" not in text and "Traceback" not in text, text
    for fragment in fragments:
        assert fragment in text, (fragment, text)
    return text


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_csv(path: Path, rows) -> Path:
    cells = [{k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in r.items()} for r in rows]
    # every text quoted: pandas leaves a bare "\r" unquoted, which no CSV reader can give back
    pd.DataFrame(cells).to_csv(path, index=False, quoting=csv.QUOTE_NONNUMERIC)
    return path


def write_parquet(path: Path, rows) -> Path:
    pd.DataFrame(rows).to_parquet(path, index=False)
    return path


# --------------------------------------------------------------------------- response_text


@FAST
@given(responses)
def test_response_text_reads_every_shape_exactly(value):
    assert response_text(value) == expected_text(value)


@FAST
@given(texts)
def test_response_text_message_serialised_in_a_cell(content):
    as_json = json.dumps({"role": "assistant", "content": content})
    as_literal = repr({"role": "assistant", "content": content})
    assert response_text(as_json) == content
    assert response_text(as_literal) == content


@FAST
@given(st.one_of(junk, st.text(alphabet="{}[]:'\"content, ", max_size=30)))
def test_response_text_returns_text_or_value_error(value):
    try:
        result = response_text(value)
    except ValueError:
        return
    assert isinstance(result, str)
    if isinstance(value, str) and not value.strip().startswith("{"):
        assert result == value  # plain text is never altered


@pytest.mark.parametrize("value, expected", [
    ("{[]: 'content'}", "{[]: 'content'}"),  # not a message (an unhashable key), so plain text
    ('[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]', "a"),  # a list in a cell
    ("[{'role': 'assistant', 'content': 'py'}]", "py"),
    ('["content"]', '["content"]'),
    ("[1, 2] content", "[1, 2] content"),
])
def test_response_text_cells_that_look_like_messages(value, expected):
    assert response_text(value) == expected


# --------------------------------------------------------------------------- records_to_pairs


@FAST
@given(good_rows())
def test_records_to_pairs_keeps_every_value(rows):
    pairs = records_to_pairs(list(rows[0]), rows, "s", "f.jsonl")
    check_pairs(pairs, rows)
    assert all(p.extras == {"notes": r["notes"]} for p, r in zip(pairs, rows, strict=True))
    frame_pairs = records_to_pairs(list(rows[0]), pd.DataFrame(rows).to_dict("records"), "s", "f")
    assert [p.id for p in frame_pairs] == [r["id"] for r in rows]


@FAST
@given(good_rows(), st.data())
def test_a_bad_cell_is_one_error_naming_row_and_column(rows, data):
    row_index = data.draw(st.integers(0, len(rows) - 1))
    column = data.draw(st.sampled_from([*REQUIRED_COLUMNS, "issue_scale", "category"]))
    bad = data.draw(junk)
    if column == "id":
        assume(not (isinstance(bad, (int, float)) and not isinstance(bad, bool) and float(bad).is_integer()))
    if column in ("issue_scale", "category", "for_response", "against_response"):
        # a null answer is no defect: it is a placeholder (a missing answer), loaded and never judged
        assume(bad is not None and not (isinstance(bad, float) and math.isnan(bad)))
    if column == "issue_scale":
        assume(not (isinstance(bad, (int, float)) and not isinstance(bad, bool) and float(bad) in range(6)))
    rows[row_index][column] = bad
    with pytest.raises(CalibrateError) as caught:
        records_to_pairs(list(rows[0]), rows, "s", "f.jsonl", first_row=7)
    one_line(caught.value, "set 's' (f.jsonl)", f"row {row_index + 7}", f"'{column}'")


def test_missing_column_and_no_rows():
    with pytest.raises(CalibrateError) as caught:
        records_to_pairs(["id"], [{"id": 1}], "s", "f.csv")
    one_line(caught.value, "f.csv", "missing required column 'issue_description'")


# --------------------------------------------------------------------------- load_source / stream_source


@FILES
@given(good_rows())
def test_jsonl_and_parquet_round_trip(rows):
    with tempfile.TemporaryDirectory() as tmp:
        loaded = load_source(str(write_jsonl(Path(tmp) / "a.jsonl", rows)), "s")
        check_pairs(loaded.pairs, rows)
        # parquet columns hold one type: every response as a message dict
        as_messages = [{**r, "for_response": {"role": "assistant", "content": expected_text(r["for_response"])},
                        "against_response": {"role": "assistant", "content": expected_text(r["against_response"])}}
                       for r in rows]
        loaded = load_source(str(write_parquet(Path(tmp) / "a.parquet", as_messages)), "s")
        check_pairs(loaded.pairs, as_messages)


@FILES
@given(good_rows(text=words, response=st.one_of(words, message, message_list)))
def test_csv_round_trip_of_text(rows):
    for r in rows:  # CSV has no empty string distinct from null: use words everywhere
        for key in ("for_response", "against_response"):
            if not isinstance(r[key], str):
                r[key] = {"role": "assistant", "content": "w" + expected_text(r[key])}
    with tempfile.TemporaryDirectory() as tmp:
        loaded = load_source(str(write_csv(Path(tmp) / "a.csv", rows)), "s")
        check_pairs(loaded.pairs, rows)


@FILES
@given(good_rows(), st.sampled_from(["jsonl", "csv"]))
def test_csv_and_jsonl_with_any_text_load_exactly_or_fail_in_one_line(rows, kind):
    with tempfile.TemporaryDirectory() as tmp:
        path = (write_jsonl if kind == "jsonl" else write_csv)(Path(tmp) / f"a.{kind}", rows)
        try:
            loaded = load_source(str(path), "s")
        except CalibrateError as error:
            assert kind == "csv", error  # JSON keeps every value; only CSV loses types
            one_line(error, str(path))
            return
        if kind == "csv":  # CSV has no empty text apart from a missing cell: an optional "" reads as null
            rows = [{**r, "category": r["category"] or None} for r in rows]
        check_pairs(loaded.pairs, rows)


@FILES
@given(good_rows(), st.data(), st.integers(1, 4))
def test_a_bad_cell_in_a_file_is_one_error_naming_file_row_and_column(rows, data, chunk):
    row_index = data.draw(st.integers(0, len(rows) - 1))
    column = data.draw(st.sampled_from(["issue_description", "for_question", "for_response", "against_response"]))
    # a null answer is no defect (a placeholder, loaded and never judged): null is bad only in the other columns
    null = st.nothing() if column.endswith("_response") else st.none()
    rows[row_index][column] = data.draw(st.one_of(null, st.integers(), st.booleans(), st.just([]),
                                                  st.just({"content": None}), st.just({"text": "x"})))
    with tempfile.TemporaryDirectory() as tmp:
        path = write_jsonl(Path(tmp) / "a.jsonl", rows)
        for read in (lambda: load_source(str(path), "s"), lambda: [c for c in stream_source(str(path), "s", chunk)]):
            with pytest.raises(CalibrateError) as caught:
                read()
            one_line(caught.value, str(path), f"row {row_index + 1}", f"'{column}'")


def test_csv_numeric_looking_text_is_read_as_text(tmp_path):
    """CSV cells are text: an answer "42" stays "42", an extra column "007" stays "007", ids are read
    from their digits, and both readers agree."""
    rows = [{"id": i, "issue_description": "i", "for_question": "q", "against_question": "q",
             "for_response": answer, "against_response": "b", "notes": "007"} for i, answer in enumerate(["42", "a"])]
    path = write_csv(tmp_path / "a.csv", rows)
    whole = load_source(str(path), "s").pairs
    streamed = [p for c in stream_source(str(path), "s", 1) for p in c]
    assert streamed == whole and [p.extras for p in whole] == [{"notes": "007"}] * 2
    assert whole[0].for_response == "42" and [p.id for p in whole] == [0, 1]


@FILES
@given(good_rows(min_size=2), st.integers(1, 5), st.sampled_from(["jsonl", "parquet"]))
def test_stream_source_agrees_with_load_source_for_any_chunk_size(rows, chunk, kind):
    if kind == "parquet":
        rows = [{**r, "for_response": expected_text(r["for_response"]),
                 "against_response": expected_text(r["against_response"])} for r in rows]
    with tempfile.TemporaryDirectory() as tmp:
        path = (write_jsonl if kind == "jsonl" else write_parquet)(Path(tmp) / f"a.{kind}", rows)
        whole = load_source(str(path), "s").pairs
        stream = stream_source(str(path), "s", chunk_rows=chunk)
        assert stream.total == len(rows)
        streamed = [p for chunk_pairs in stream for p in chunk_pairs]
        assert streamed == whole
        assert [p.extras for p in streamed] == [p.extras for p in whole]


@FILES
@given(good_rows(min_size=2), st.integers(1, 5), st.data(), st.sampled_from(["jsonl", "csv", "parquet"]))
def test_duplicate_ids_are_found_by_both_readers(rows, chunk, data, kind):
    i = data.draw(st.integers(0, len(rows) - 2))
    j = data.draw(st.integers(i + 1, len(rows) - 1))
    rows[j]["id"] = rows[i]["id"]
    rows = [{**r, "for_response": "w" + expected_text(r["for_response"]),
             "against_response": "w" + expected_text(r["against_response"]),
             "issue_description": "w" + r["issue_description"], "for_question": "w" + r["for_question"],
             "against_question": "w" + r["against_question"], "category": "c", "notes": "n"} for r in rows]
    with tempfile.TemporaryDirectory() as tmp:
        writer = {"jsonl": write_jsonl, "csv": write_csv, "parquet": write_parquet}[kind]
        path = writer(Path(tmp) / f"a.{kind}", rows)
        with pytest.raises(CalibrateError) as caught:
            load_source(str(path), "s")
        one_line(caught.value, f"duplicate id {rows[i]['id']}")
        with pytest.raises(CalibrateError) as caught:
            for _ in stream_source(str(path), "s", chunk_rows=chunk):
                pass
        one_line(caught.value, str(path), f"duplicate id {rows[i]['id']}")


@FILES
@given(st.binary(max_size=200), st.sampled_from([".jsonl", ".json", ".csv", ".parquet", ".txt"]))
def test_any_bytes_file_loads_or_fails_in_one_line_naming_it(content, suffix):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"a{suffix}"
        path.write_bytes(content)
        for read in (lambda: load_source(str(path), "s"), lambda: [c for c in stream_source(str(path), "s", 3)]):
            try:
                read()
            except CalibrateError as error:
                one_line(error)
                assert str(path) in str(error) or "set 's'" in str(error)


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv"])
@pytest.mark.parametrize("content",
                         [b"", b"\n\n", b"\xff\xfe\x00bad", "{\"id\": 1, \"x\": \"caf\xe9\"}\n".encode("latin-1")])
def test_empty_and_non_utf8_files(tmp_path, suffix, content):
    path = tmp_path / f"a{suffix}"
    path.write_bytes(content)
    with pytest.raises(CalibrateError) as caught:
        load_source(str(path), "s")
    one_line(caught.value)
    with pytest.raises(CalibrateError) as caught:
        [c for c in stream_source(str(path), "s", 2)]
    one_line(caught.value)


@FILES
@given(st.sampled_from(["jsonl", "csv", "parquet"]), st.integers(200_000, 210_000), st.sampled_from("aé漢🙂"))
def test_answers_of_200_kb_are_kept_whole(kind, size, char):
    answer = ("w" + char * size)[:size]
    rows = [{"id": 1, "issue_description": "wi", "for_question": "wq", "against_question": "wq",
             "for_response": answer, "against_response": {"role": "assistant", "content": answer[::-1]},
             "category": "c", "issue_scale": 1, "notes": "n"}]
    if kind == "parquet":
        rows[0]["against_response"] = answer[::-1]
    with tempfile.TemporaryDirectory() as tmp:
        writer = {"jsonl": write_jsonl, "csv": write_csv, "parquet": write_parquet}[kind]
        path = writer(Path(tmp) / f"a.{kind}", rows)
        (pair,) = load_source(str(path), "s").pairs
        assert pair.for_response == answer and pair.against_response == answer[::-1]
        (streamed,) = [p for c in stream_source(str(path), "s", 1) for p in c]
        assert streamed == pair


def test_folder_with_no_train_split_and_no_files(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CalibrateError) as caught:
        load_source(str(tmp_path / "empty"), "s")
    one_line(caught.value, "no parquet, jsonl or csv files")
    folder = tmp_path / "splits" / "data"
    folder.mkdir(parents=True)
    for split in ("validation", "test"):
        write_jsonl(folder / f"{split}-00000-of-00001.jsonl", [{"id": 1}])
    with pytest.raises(CalibrateError) as caught:
        load_source(str(tmp_path / "splits"), "s")
    one_line(caught.value, "has no split 'train'")


@FILES
@given(st.lists(st.dictionaries(st.sampled_from(["id", "a", "b"]), junk | texts, max_size=3), max_size=4),
       st.sampled_from([".jsonl", ".json", ".csv", ".parquet"]))
def test_read_table_any_records(records, suffix):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"t{suffix}"
        if suffix == ".parquet":
            try:
                pd.DataFrame(records).to_parquet(path)
            except Exception:  # noqa: BLE001 - pyarrow cannot store every mix of types; not under test
                assume(False)
        elif suffix == ".csv":
            pd.DataFrame(records).to_csv(path, index=False)
        elif suffix == ".json":
            path.write_text(json.dumps(records, default=repr))
        else:
            path.write_text("".join(json.dumps(r, default=repr) + "\n" for r in records))
        try:
            frame = read_table(path)
        except CalibrateError as error:
            one_line(error, str(path))
            return
        assert isinstance(frame, pd.DataFrame)
        try:
            load_source(str(path), "s")
        except CalibrateError as error:
            one_line(error)


# --------------------------------------------------------------------------- judge replies

@st.composite
def judgments(draw):
    data = {}
    for p in (1, 2):
        data[f"person_{p}_core_position"] = draw(texts)
        data[f"person_{p}_has_no_information"] = draw(st.booleans())
        data[f"person_{p}_refusal"] = draw(st.booleans())
    data["key_points_of_alignment"] = draw(st.lists(texts, max_size=3))
    data["key_points_of_opposition"] = draw(st.lists(texts, max_size=3))
    data["alignment_score"] = draw(st.integers(-2, 2))
    if draw(st.booleans()):
        data["central_issue"] = draw(texts)
        data["value_preference"] = draw(st.booleans())
    return data


prose = st.text(max_size=60)


@FAST
@given(judgments(), prose, prose, st.sampled_from(["plain", "fence", "json-fence", "indent"]))
def test_extract_json_round_trips_through_prose_and_fences(data, before, after, style):
    body = json.dumps(data, indent=2 if style == "indent" else None, ensure_ascii=False)
    if style == "fence":
        body = f"```\n{body}\n```"
    elif style == "json-fence":
        body = f"```json\n{body}\n```"
    if style in ("fence", "json-fence"):
        assume("```" not in before + after)
    text = f"{before}\n{body}\n{after}"
    assert extract_json(text) == data
    assert validate_fields(extract_json(text)) == {**data}


@pytest.mark.parametrize("prose", ["Here {is} my answer: ", "Example: {} and {\"a\": 1}.\n", "} {{ ", "```\n"])
def test_extract_json_finds_the_judgment_among_braces_in_prose(prose):
    data = {"alignment_score": 1, "key_points_of_alignment": ["{x}"], "nested": {"a": [1, {"b": 2}]}}
    assert extract_json(prose + json.dumps(data) + " } trailing {") == data


@FAST
@given(st.one_of(st.text(max_size=80), junk))
def test_extract_json_raises_only_value_error(text):
    try:
        extract_json(text)
    except ValueError:
        pass


@FAST
@given(judgments(), st.sampled_from(JUDGE_FIELDS[1:3] + JUDGE_FIELDS[4:6] + ("alignment_score", "value_preference")),
       st.one_of(junk, st.text(max_size=8), st.sampled_from(
           ["true", "False", " TRUE ", "yes", "no", "1", "0", "2", "2.0", " -1 ", "2.5", "3", "-3", "nan", "inf",
            "1e0", "", "null", True, False, 0, 1, 2.0, -2.0, 1.5, 3, -3, 10**30, float("inf")])))
def test_validate_fields_reads_what_the_value_says_or_names_the_field(data, key, value):
    data[key] = value
    try:
        out = validate_fields(data)
    except ValueError as error:
        assert f"'{key}'" in str(error)
        return
    got = out[key]
    if key == "alignment_score":
        assert type(got) is int and -2 <= got <= 2
        assert not isinstance(value, bool)
        number = float(value.strip()) if isinstance(value, str) else value
        assert number == got  # "2", 2.0 and 2 say 2; nothing else is a score
        assert isinstance(value, (int, float, str))
    else:
        assert type(got) is bool
        if isinstance(value, bool):
            assert got is value
        else:
            assert isinstance(value, str) and value.strip().lower() == str(got).lower()


@FAST
@given(judgments(), st.sampled_from(["person_1_core_position", "key_points_of_alignment", "central_issue"]))
def test_validate_fields_null_text_is_not_the_word_none(data, key):
    data[key] = None
    out = validate_fields(data)
    assert "None" not in json.dumps(out.get(key))


def completion(content, finish="stop", usage=None, **message) -> bytes:
    body = {"choices": [{"message": {"role": "assistant", "content": content, **message}, "finish_reason": finish}]}
    if usage is not None:
        body["usage"] = usage
    return orjson.dumps(body)


@FAST
@given(st.binary(max_size=300))
def test_read_completion_any_bytes_is_a_verdict(raw):
    verdict = read_completion(raw)
    assert isinstance(verdict, Verdict) and verdict.parse_status in PARSE_STATUSES


@FAST
@given(st.one_of(junk.filter(lambda v: not isinstance(v, bytes)), st.text(max_size=40)),
       st.sampled_from(["stop", "length", None, 5]),
       st.one_of(st.none(), st.fixed_dictionaries({"prompt_tokens": st.integers(0, 10**6),
                                                   "completion_tokens": st.integers(0, 10**6)})))
def test_read_completion_any_content_is_a_typed_verdict(content, finish, usage):
    verdict = read_completion(completion(content, finish, usage))
    assert verdict.parse_status in PARSE_STATUSES
    if verdict.parse_status != "ok":
        assert verdict.failure_reason


@FAST
@given(judgments(), prose, prose, st.integers(0, 10**6), st.integers(0, 10**6))
def test_read_completion_reads_a_valid_judgment_exactly(data, before, after, tokens_in, tokens_out):
    content = f"{before}\n```json\n{json.dumps(data)}\n```\n{after}"
    assume("```" not in before + after)
    verdict = read_completion(completion(content, usage={"prompt_tokens": tokens_in, "completion_tokens": tokens_out}))
    assert verdict.parse_status == "ok" and verdict.fields == data
    assert (verdict.input_tokens, verdict.output_tokens) == (tokens_in, tokens_out)


@pytest.mark.parametrize(("raw", "status"), [
    (b'{"choices":[{"message":"hi"}]}', "parse_error"),
    (b'{"choices":[{"message":{"content":"x"}}],"usage":"x"}', "invalid_usage"),
    (b'{"choices":[{"message":{"content":"x"}}],"usage":{"prompt_tokens":"a"}}', "invalid_usage"),
    (b'{"choices":[{"message":{"content":"x"}}],"usage":{"prompt_tokens":[1]}}', "invalid_usage"),
])
def test_read_completion_malformed_envelope_is_a_typed_failure(raw, status):
    verdict = read_completion(raw)
    assert verdict.parse_status == status and verdict.failure_reason


# --------------------------------------------------------------------------- prompt rendering

TEMPLATE = load_prompt(REPO / "judges" / "prompts" / "valbench-v2-guarded.txt", "test")
MARKERS = ["<<<RESPONSE_1", "RESPONSE_1>>>", "<<<RESPONSE_2", "RESPONSE_2>>>", "<<<", ">>>", "<<", ">>", "<", ">",
           "{{response_1}}", "{{response_2}}", "{{question_1}}", "{{issue_description}}", "\n", "RESPONSE_1"]
answers = st.lists(st.one_of(st.sampled_from(MARKERS), st.text(max_size=10)), max_size=12).map("".join)


@FAST
@given(answers, answers, st.integers(100, 200))
def test_render_puts_each_answer_once_between_its_markers(first, second, limit):
    view = PairView("the issue", "Q one?", first, "Q two?", second)
    (_, user), cut = TEMPLATE.render(view, limit)
    text = user["content"]
    for n in (1, 2):
        assert text.count(f"<<<RESPONSE_{n}") == 1 and text.count(f"RESPONSE_{n}>>>") == 1
    # placeholders in answers stay data: every "{{" in the prompt is an answer's own
    assert text.count("{{") == first[:limit].count("{{") + second[:limit].count("{{")
    block_1 = text.split("<<<RESPONSE_1\n", 1)[1].split("\nRESPONSE_1>>>", 1)[0]
    block_2 = text.split("<<<RESPONSE_2\n", 1)[1].split("\nRESPONSE_2>>>", 1)[0]
    expected_cut = 0
    for block, answer in ((block_1, first), (block_2, second)):
        assert "<<<" not in block and ">>>" not in block  # no answer can open or close a block
        note = ""
        if len(answer) > limit:
            expected_cut += len(answer) - limit
            note = f"\n[... answer truncated by the evaluator: {len(answer) - limit} more characters not shown]"
        assert block.endswith(note)
        shown, kept = block[:len(block) - len(note)], answer[:limit]
        # defusing only puts spaces between the brackets of a run; nothing else changes
        assert shown.replace(" ", "") == kept.replace(" ", "")
        assert len(shown) >= len(kept)
        if "<<<" not in kept and ">>>" not in kept:
            assert shown == kept
    assert cut == expected_cut


@FAST
@given(st.text(max_size=50), st.integers(100, 120))
def test_render_without_markers_shows_the_answer_verbatim(answer, limit):
    assume("<<<" not in answer and ">>>" not in answer)
    view = PairView("i", "q1", answer, "q2", "other")
    (_, user), cut = TEMPLATE.render(view, limit)
    assert f"<<<RESPONSE_1\n{answer}\nRESPONSE_1>>>" in user["content"]
    assert cut == 0


@FILES
@given(st.integers(200_000, 210_000), st.integers(100, 20_000))
def test_render_cuts_huge_answers_with_an_exact_count(size, limit):
    answer = "x" * size
    view = PairView("i", "q1", answer, "q2", answer + "yy")
    (_, user), cut = TEMPLATE.render(view, limit)
    assert cut == (size - limit) + (size + 2 - limit)
    assert f"{size - limit} more characters not shown]" in user["content"]
    assert f"{size + 2 - limit} more characters not shown]" in user["content"]


# --------------------------------------------------------------------------- tables: ratings, human labels, PPI

cells = st.one_of(st.sampled_from(["", "-2", "-1", "0", "1", "2", "2.0", "1.5", "3", "x", "true", "False", "NA", "nan",
                                   "inf", " 1 ", "007", "yes"]), st.text(alphabet="0123456789-.e ax", max_size=4))
column_names = st.sampled_from(["item", "a", "b", "truth", "set_name", "pair_id", "pred"])


@st.composite
def tables(draw):
    columns = draw(st.lists(column_names, min_size=1, max_size=4, unique=True))
    n = draw(st.integers(0, 6))
    return columns, [[draw(cells) for _ in columns] for _ in range(n)]


def write_table(path: Path, columns, rows) -> None:
    if path.suffix == ".parquet":
        pd.DataFrame(rows, columns=columns).replace("", None).to_parquet(path)
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(dict(zip(columns, r, strict=True))) + "\n" for r in rows) or "")
    else:
        pd.DataFrame(rows, columns=columns).to_csv(path, index=False, sep="\t" if path.suffix == ".tsv" else ",")


@FAST
@given(tables(), st.sampled_from([".csv", ".tsv", ".parquet"]), st.sampled_from([None, "truth"]))
def test_load_ratings_any_table(table, suffix, truth):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"r{suffix}"
        write_table(path, *table)
        try:
            ratings, _ = load_ratings(path, truth=truth)
        except CalibrateError as error:
            one_line(error, str(path))
            return
        columns, rows = table
        assert len(ratings) == len(rows) and ratings.index.is_unique
        raters = [c for c in columns if c not in ("item", truth)]
        assert list(ratings.columns) == raters
        for r, row in enumerate(rows):  # every number read is the number written
            for c, name in enumerate(columns):
                if name in raters and ratings[name].dtype == float:
                    value = ratings[name].iloc[r]
                    if row[c].strip() == "":
                        assert math.isnan(value)
                    else:
                        assert value == float(row[c]) or (math.isnan(value) and math.isnan(float(row[c])))


@FAST
@given(tables(), st.sampled_from([".csv", ".jsonl", ".parquet"]))
def test_human_labels_any_table(table, suffix):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"h{suffix}"
        write_table(path, *table)
        try:
            labels = scores_wide(read_labels(path))
        except CalibrateError as error:
            one_line(error, str(path))
            return
        values = labels.to_numpy().ravel()
        assert all(math.isnan(v) or v in (-2, -1, 0, 1, 2) for v in values)
        columns, rows = table
        ids = ("item",) if "item" in columns else ("set_name", "pair_id")  # with an item column, the rest rate
        annotators = [c for c in columns if c not in ids]
        assert list(labels.columns) == [c for c in columns if c in annotators]
        assert labels.index.is_unique and len(labels) == len(rows)
        for r, row in enumerate(rows):
            for c, name in enumerate(columns):
                if name in annotators:
                    value = labels[name].iloc[r]
                    if row[c].strip() == "":
                        assert math.isnan(value), (row[c], value)
                    else:
                        assert value == float(row[c]), (row[c], value)


@FAST
@given(tables(), st.sampled_from([".csv", ".jsonl", ".parquet"]), st.sampled_from(["ppi", "classical"]))
def test_estimate_table_any_table(table, suffix, method):
    from calibrate.data.tables import read_prediction_table
    from calibrate.stats.ppi import estimate_table

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"p{suffix}"
        write_table(path, *table)
        try:
            result = estimate_table(read_prediction_table(path, "truth", "pred"), method=method)
        except CalibrateError as error:
            one_line(error, str(path))
            return
        assert isinstance(result, dict)


# --------------------------------------------------------------------------- through the real CLI


def test_cli_fit_on_a_bad_set_is_one_line_and_exit_2(tmp_path):
    rows = [{"id": i, "issue_description": "i", "for_question": "q", "against_question": "q",
             "for_response": "a", "against_response": "b"} for i in range(3)]
    rows[1]["against_response"] = {"role": "assistant", "content": None}
    write_jsonl(tmp_path / "unaligned-0.jsonl", rows)
    result = run_cli("fit", "--data", str(tmp_path), "--sets", "unaligned-0", "--judge", "heuristic", "--limit", "2",
                     "--no-progress", "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "row 2" in lines[0] and "against_response" in lines[0], result.stderr


def test_cli_agreement_on_bad_ratings_is_one_line_and_exit_2(tmp_path):
    path = tmp_path / "ratings.csv"
    path.write_bytes(b"item,a,b\n1,\xff\xfe,2\n1,1,2\n")
    result = run_cli("agreement", "--ratings", str(path), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and "Traceback" not in result.stderr, result.stderr


@FAST
@given(st.lists(st.tuples(st.sampled_from(["aligned-100", "unaligned-0", "", None, 3]),
                          st.one_of(st.integers(0, 5), st.none(), st.just(2.0), st.just("4"), st.just(True)),
                          st.one_of(st.integers(-3, 3), st.booleans(), st.none(), st.just(1.0), st.just("2"),
                                    st.just("x"), st.just(0.5))), min_size=1, max_size=6),
       st.sampled_from([".jsonl", ".csv"]))
def test_human_labels_ids_and_scores_are_read_exactly_or_rejected(rows, suffix):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"h{suffix}"
        records = [{"set_name": s, "pair_id": p, "ann": v} for s, p, v in rows]
        if suffix == ".jsonl":
            write_jsonl(path, records)
        else:
            pd.DataFrame(records).to_csv(path, index=False)
        try:
            labels = scores_wide(read_labels(path))
        except CalibrateError as error:
            one_line(error, str(path))
            return
        for (set_name, pair_id, value), item in zip(rows, labels.index, strict=False):
            assert item == f"{set_name}/{int(pair_id)}"  # never "s/1.0", "nan" or "None"
            assert not isinstance(value, bool) and not isinstance(pair_id, bool)
            score = labels.at[item, "ann"]
            assert (value is None and math.isnan(score)) or score == float(value)
