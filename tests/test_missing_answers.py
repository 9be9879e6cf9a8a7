"""Pairs whose answer is a placeholder ("No response", empty, whitespace, null): loaded and marked in
every input format, never sent to a judge (nor to a panel's members), counted as `missing_answer`
failures, left out of the metrics (which equal those of the set without them), and listed in the
reports. No mocks: real files, the real runner and store, the offline judges and a loopback server."""

from __future__ import annotations

import json
import math

import datasets
import pandas as pd
import pytest

import calibrate
from calibrate.data.calibration import CALIBRATION_SETS, load_calibration_sets, sample_path
from calibrate.data.pairs import Pair, is_placeholder_answer, response_text
from calibrate.data.sources import load_source, stream_source
from calibrate.judging.base import PARSE_STATUSES
from calibrate.judging.registry import load_judge_config, make_backend
from calibrate.judging.runner import judge_pairs
from calibrate.store.judgments import JudgmentStore
from tests.fakes.calibration_sets import sample_frame
from tests.fakes.judges import KEY_VARIABLE, SECRET, write_judge
from tests.fakes.openai_server import ServerState
from tests.inprocess import cli

# (row position in the bundled set, the answer put there, on which side); the last row loses both answers
PLACEHOLDERS = [(1, "No response", "for"), (4, " no response ", "against"), (7, "", "for"),
                (10, "  \t ", "against"), (13, None, "both"), (16, "NO RESPONSE", "for")]
MARK = "MISSING-ANSWER-MARK"  # in the issue of every pair given a placeholder: a judge that reads it fails loudly
FORMATS = ("jsonl", "csv", "parquet")
N_BOOT = 200


def content(value):
    return value["content"] if isinstance(value, dict) else value


def with_placeholders(frame: pd.DataFrame, as_messages: bool) -> tuple[pd.DataFrame, dict[int, str]]:
    """The set with some answers replaced by placeholders; returns it and {pair id: side}."""
    frame = frame.copy()
    if not as_messages:
        for column in ("for_response", "against_response"):
            frame[column] = frame[column].map(content)
    sides = {}
    for position, text, side in PLACEHOLDERS:
        columns = ["for_response", "against_response"] if side == "both" else [f"{side}_response"]
        for column in columns:
            # a message dict where the set holds messages (a null cell stays null), plain text otherwise
            value = {"role": "assistant", "content": text} if as_messages and text is not None else text
            frame.at[frame.index[position], column] = value
        frame.at[frame.index[position], "issue_description"] += f" [{MARK}]"
        sides[int(frame["id"].iloc[position])] = side
    return frame, sides


def write_set(frame: pd.DataFrame, path) -> None:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in frame.to_dict("records")))
    elif path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:  # CSV: messages serialised into their cells (as JSON), a null answer an empty cell
        cells = frame.copy()
        for column in cells.columns:
            cells[column] = cells[column].map(lambda v: json.dumps(v) if isinstance(v, (dict, list)) else v)
        cells.to_csv(path, index=False)


def write_sets(root, kind: str, drop: bool = False) -> dict[str, dict[int, str]]:
    """The four calibration sets with placeholders in `root` as <set>.<kind> (or, with `drop`, the
    same sets with those pairs left out); returns {set: {pair id: side}}."""
    root.mkdir(parents=True, exist_ok=True)
    missing = {}
    for name in CALIBRATION_SETS:
        # parquet columns hold one type: plain text there (messages in the other formats)
        frame, sides = with_placeholders(sample_frame(name), as_messages=kind != "parquet")
        if drop:
            frame = frame[~frame["id"].isin(sides)]
        write_set(frame, root / f"{name}.{kind}")
        missing[name] = sides
    return missing


@pytest.fixture
def server(openai_server):
    return openai_server


# --------------------------------------------------------------------------- what a placeholder is


@pytest.mark.parametrize("value", [
    "No response", " no response ", "NO RESPONSE", "\tNo Response\n", "", "   ", "\n\t", None, float("nan"),
    {"role": "assistant", "content": "No response"}, {"role": "assistant", "content": "  "},
    [{"role": "user", "content": "q"}, {"role": "assistant", "content": " no response"}],
    '{"role": "assistant", "content": "No response"}', "{'role': 'assistant', 'content': ''}",
    '[{"role": "user", "content": "q"}, {"role": "assistant", "content": "No response"}]',
])
def test_placeholders_in_every_shape_are_recognised(value):
    assert is_placeholder_answer(response_text(value))


@pytest.mark.parametrize("value", ["No response.", "No responses", "no", "None", "null", "Response",
                                   {"role": "assistant", "content": "No response, sorry"}, "x"])
def test_real_answers_are_not_placeholders(value):
    assert not is_placeholder_answer(response_text(value))


@pytest.mark.parametrize("kind", FORMATS)
def test_pairs_with_placeholders_load_marked_and_others_keep_their_keys(tmp_path, kind):
    missing = write_sets(tmp_path / "cal", kind)
    loaded = load_calibration_sets(str(tmp_path / "cal"))
    sample = load_calibration_sets("sample")
    for name in CALIBRATION_SETS:
        pairs = loaded[name].pairs
        assert len(pairs) == len(sample[name].pairs)  # nothing rejected, nothing dropped
        assert {p.id: p.missing_side for p in pairs if p.missing_answers} == missing[name]
        both = next(p for p in pairs if p.missing_side == "both")
        assert both.missing_answers == ("for_response", "against_response")
        # a pair with both answers keeps its content key (the judgment cache's key), whatever the format
        keys = {p.id: p.content_key for p in sample[name].pairs}
        assert all(p.content_key == keys[p.id] for p in pairs if not p.missing_answers)


def test_saved_datasets_and_streams_follow_the_same_rule(tmp_path):
    frame, sides = with_placeholders(sample_frame("aligned-100"), as_messages=False)
    datasets.Dataset.from_pandas(frame, preserve_index=False).save_to_disk(str(tmp_path / "saved"))
    write_set(frame, tmp_path / "a.csv")
    write_set(frame, tmp_path / "a.parquet")
    for source in ("saved", "a.csv", "a.parquet"):
        whole = load_source(str(tmp_path / source), "responses").pairs
        streamed = [p for chunk in stream_source(str(tmp_path / source), "responses", chunk_rows=5) for p in chunk]
        assert streamed == whole
        assert {p.id: p.missing_side for p in whole if p.missing_answers} == sides, source


# --------------------------------------------------------------------------- never judged, counted, left out


def missing_rows(table: pd.DataFrame) -> pd.DataFrame:
    return table[table["parse_status"] == "missing_answer"]


@pytest.mark.parametrize("kind", FORMATS)
def test_fit_never_judges_placeholders_counts_them_and_keeps_the_other_metrics(tmp_path, kind):
    missing = write_sets(tmp_path / "with", kind)
    write_sets(tmp_path / "without", kind, drop=True)
    result = calibrate.fit("heuristic", data=str(tmp_path / "with"), sets=CALIBRATION_SETS, out=tmp_path / "out",
                           cache=tmp_path / "with.sqlite3", n_boot=N_BOOT)
    table = result.judgments
    rows = missing_rows(table)
    assert {(s, int(i)): side
            for s, i, side in zip(rows["set_name"], rows["pair_id"], rows["missing_side"], strict=True)} == \
        {(s, i): side for s, sides in missing.items() for i, side in sides.items()}
    assert "missing_answer" in PARSE_STATUSES
    # a typed failure that cost nothing: no call, no tokens, no latency, no score
    assert (rows["attempts"] == 0).all() and (rows["input_tokens"] == 0).all() and (rows["output_tokens"] == 0).all()
    assert (rows["cost_usd"] == 0).all() and rows["latency_s"].isna().all() and rows["alignment_score"].isna().all()
    assert not rows["from_cache"].any()
    for side, reason in zip(rows["missing_side"], rows["failure_reason"], strict=True):
        named = {"for": ["for_response"], "against": ["against_response"],
                 "both": ["for_response", "against_response"]}[side]
        assert all(column in reason for column in named) and "not sent to the judge" in reason
    assert (table.loc[table["parse_status"] != "missing_answer", "parse_status"] == "ok").all()
    # the store holds judgments only of the other pairs (and logs no failure: nothing was paid for)
    config_hash = load_judge_config("heuristic").config_hash
    others = {p.content_key for s in load_calibration_sets(str(tmp_path / "with")).values()
              for p in s.pairs if not p.missing_answers}
    with JudgmentStore(tmp_path / "with.sqlite3") as store:
        assert store.count(config_hash) == len(others)
        assert store.failures(config_hash) == []
    assert result.calibration.run.items == len(others) and result.calibration.run.failed == 0

    # counted: by type in every set, in n_failed, the class view's n_failed, the summary and the accounting;
    # left out of the confusion matrix (FAILURE_CONVENTION)
    record = json.loads((tmp_path / "out" / "calibration.json").read_text())
    for name, sides in missing.items():
        report = record["sets"][name]
        assert report["failures"] == {"missing_answer": len(sides)}
        assert report["n_failed"] == len(sides) and report["n_judged"] == report["n_pairs"] - len(sides)
        assert report["classification"]["n_failed"] == len(sides)
        assert sum(report["classification"]["judged_counts"].values()) == report["n_judged"]
        assert report["missing_answers"]["n_pairs"] == len(sides)
        assert {p["pair_id"]: p["side"] for p in report["missing_answers"]["pairs"]} == sides
    n_missing = sum(len(s) for s in missing.values())
    assert sum(sum(row.values()) for row in record["confusion_matrix"].values()) == record["summary"]["n_judged"]
    assert record["summary"]["n_failed"] == n_missing == record["summary"]["n_missing_answers"]
    # the accounting counts distinct judgments (equal content is one item, here a pair emptied alike in two sets)
    assert record["accounting"]["failures_by_reason"] == {"missing_answer": rows["item_key"].nunique()}

    # left out: every metric of every set equals that of the set without those pairs (same judge)
    clean = calibrate.fit("heuristic", data=str(tmp_path / "without"), sets=CALIBRATION_SETS,
                          cache=tmp_path / "without.sqlite3", n_boot=N_BOOT)
    for name in CALIBRATION_SETS:
        assert record["sets"][name]["metrics"] == clean.sets[name].to_dict()["metrics"], name
        assert record["sets"][name]["metrics"]["PAC"]["value"] == clean.sets[name].metrics["PAC"].value
        assert record["sets"][name]["metrics"]["REF"] == clean.sets[name].metrics["REF"].to_dict()
    assert record["summary"]["pac_error_by_set"] == clean.summary.pac_error_by_set
    assert record["mapping"]["selected"] == clean.calibration.mapping.selected

    # listed in the report, by set, pair id and side
    report_md = (tmp_path / "out" / "report.md").read_text()
    assert "## Pairs without an answer" in report_md and f"**{n_missing} pairs**" in report_md
    for name, sides in missing.items():
        line = next(line for line in report_md.splitlines() if line.startswith(f"| {name} | {len(sides)} |"))
        assert all(f"{pair_id} ({side})" in line for pair_id, side in sides.items())


def test_every_order_and_repeat_is_a_missing_answer_and_counts_stay_the_judges(tmp_path):
    missing = write_sets(tmp_path / "cal", "jsonl")
    pairs = load_calibration_sets(str(tmp_path / "cal"))["aligned-100"].pairs
    backend = make_backend(load_judge_config("heuristic"))
    with JudgmentStore(tmp_path / "c.sqlite3") as store:
        table, counts = judge_pairs(backend, pairs, store, orders=("forward", "reverse"),
                                    repeats=2)
    assert len(table) == len(pairs) * 4
    rows = missing_rows(table)
    assert len(rows) == len(missing["aligned-100"]) * 4
    assert (set(zip(rows["order"], rows["repeat"], strict=True))
            == {(o, r) for o in ("forward", "reverse") for r in (0, 1)})
    judged = (len(pairs) - len(missing["aligned-100"])) * 4
    assert counts == {"judged": judged, "failed": 0, "reused": 0, "items": judged, "requests": 0,
                      "failed_by_kind": {}}  # the judge's work: nothing was asked about the missing answers
    assert (rows["failure_kind"] == "missing_answer").all()


def test_a_panel_gives_missing_answer_and_never_asks_its_members(tmp_path):
    missing = write_sets(tmp_path / "cal", "csv")
    pairs = load_calibration_sets(str(tmp_path / "cal"))["one-refusal-50"].pairs
    panel = make_backend(load_judge_config("panel"))
    with JudgmentStore(tmp_path / "c.sqlite3") as store:
        table, _ = judge_pairs(panel, pairs, store)
        rows = missing_rows(table)
        assert dict(zip(rows["pair_id"].astype(int), rows["missing_side"], strict=True)) == missing["one-refusal-50"]
        assert (rows["judge_name"] == "panel").all() and (rows["attempts"] == 0).all()
        assert (table.loc[table["parse_status"] != "missing_answer", "parse_status"] == "ok").all()  # no no_quorum
        keys = [(p.content_key, "forward", 0) for p in pairs if p.missing_answers]
        for member in panel.members:
            assert store.get_many(member.config.config_hash, keys) == {}
            assert store.count(member.config.config_hash) == len(pairs) - len(keys)


@pytest.fixture
def api_key(monkeypatch):
    monkeypatch.setenv(KEY_VARIABLE, SECRET)


def placeholder_requests(server: ServerState) -> list[str]:
    """Logged requests that carry a pair given a placeholder (none may)."""
    return [r["prompt"] for r in server.log if MARK in r["prompt"]]


def test_an_api_judge_is_never_asked_about_placeholders(server, tmp_path, api_key):
    """A loopback judge that fails loudly (HTTP 401 stops the run) on any pair given a placeholder."""
    server.by_marker = {MARK: "401"}
    missing = write_sets(tmp_path / "cal", "jsonl")
    judge = write_judge(tmp_path, server.base_url)
    result = calibrate.fit(str(judge), data=str(tmp_path / "cal"), sets=CALIBRATION_SETS,
                           cache=tmp_path / "c.sqlite3", n_boot=N_BOOT)
    others = {p.content_key for s in load_calibration_sets(str(tmp_path / "cal")).values()
              for p in s.pairs if not p.missing_answers}
    assert placeholder_requests(server) == [] and len(server.log) == len(others)
    for name, sides in missing.items():
        assert result.sets[name].failures == {"missing_answer": len(sides)}
    rows = missing_rows(result.judgments)
    assert len(rows) == sum(len(s) for s in missing.values()) and (rows["cost_usd"] == 0).all()
    assert result.calibration.accounting.cost_usd > 0  # the other pairs were paid for


def test_a_panel_of_api_judges_never_asks_a_member_about_placeholders(server, tmp_path, api_key):
    server.by_marker = {MARK: "401"}
    missing = write_sets(tmp_path / "cal", "parquet")
    members = [write_judge(tmp_path, server.base_url, name=name, model=f"test-judge-{name}")
               for name in ("member-a", "member-b")]
    panel = tmp_path / "api-panel.toml"
    panel.write_text(f'name = "api-panel"\nbackend = "panel"\nmembers = {json.dumps([str(m) for m in members])}\n')
    pairs = load_calibration_sets(str(tmp_path / "cal"))["unaligned-0"].pairs
    with JudgmentStore(tmp_path / "c.sqlite3") as store:
        table, _ = judge_pairs(make_backend(load_judge_config(str(panel))), pairs, store)
    assert placeholder_requests(server) == []
    assert len(server.log) == 2 * (len(pairs) - len(missing["unaligned-0"]))
    rows = missing_rows(table)
    assert dict(zip(rows["pair_id"].astype(int), rows["missing_side"], strict=True)) == missing["unaligned-0"]


# --------------------------------------------------------------------------- score


def responses_with_placeholders(kind: str, folder, drop: bool = False) -> tuple[str, dict[int, str]]:
    rows = [json.loads(line) for line in sample_path("responses", "steady-model").read_text().splitlines()]
    frame, sides = with_placeholders(pd.DataFrame(rows), as_messages=kind != "parquet")
    if drop:
        frame = frame[~frame["id"].isin(sides)]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"steady-model.{kind}"
    write_set(frame, path)
    return str(path), sides


def test_score_counts_placeholders_as_the_models_failures(tmp_path, sample_calibration):
    source, sides = responses_with_placeholders("jsonl", tmp_path / "with")
    process = cli("score", "--judge", "heuristic", "--responses", source, "--calibration",
                  str(sample_calibration), "--out", str(tmp_path / "out"), "--bootstrap",
                  str(N_BOOT), "--no-progress", cwd=tmp_path)
    assert process.returncode == 0, process.stderr
    assert "not judged, an answer missing" in process.stdout and "steady-model 6 pairs" in process.stdout
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    raw = metrics["models"]["steady-model"]["raw"]
    assert raw["failures"] == {"missing_answer": len(sides)}
    assert raw["n_failed"] == len(sides) and raw["n_judged"] == raw["n_pairs"] - len(sides)
    assert {p["pair_id"]: p["side"] for p in raw["missing_answers"]["pairs"]} == sides
    judgments = pd.read_parquet(tmp_path / "out" / "judgments.parquet")
    rows = missing_rows(judgments)
    assert dict(zip(rows["pair_id"].astype(int), rows["missing_side"], strict=True)) == sides
    report_md = (tmp_path / "out" / "report.md").read_text()
    line = next(line for line in report_md.splitlines() if line.startswith("| steady-model | 6 |"))
    assert all(f"{pair_id} ({side})" in line for pair_id, side in sides.items())

    # the raw metrics equal those of the dataset without those pairs; streamed in small chunks, from CSV
    source_csv, _ = responses_with_placeholders("csv", tmp_path / "csv")
    without, _ = responses_with_placeholders("csv", tmp_path / "without", drop=True)
    kept = calibrate.score("heuristic", [source_csv], calibration=sample_calibration,
                           n_boot=N_BOOT, chunk_rows=7)
    dropped = calibrate.score("heuristic", [without], calibration=sample_calibration,
                              n_boot=N_BOOT)
    kept_raw, dropped_raw = kept.models["steady-model"].raw, dropped.models["steady-model"].raw
    assert kept_raw.failures == {"missing_answer": len(sides)}
    assert kept_raw.to_dict()["metrics"] == dropped_raw.to_dict()["metrics"] == raw["metrics"]
    assert kept.models["steady-model"].mapped.value == dropped.models["steady-model"].mapped.value


def test_many_missing_answers_are_listed_up_to_a_cap(tmp_path, sample_calibration):
    """The report names the first 20 pair ids per set or model and counts the rest."""
    rows = [json.loads(line) for line in sample_path("responses", "echo-model").read_text().splitlines()]
    frame = pd.DataFrame(rows)
    frame.loc[frame.index[:30], "for_response"] = "No response"
    frame.to_json(tmp_path / "echo-model.jsonl", orient="records", lines=True)
    result = calibrate.score("heuristic", [str(tmp_path / "echo-model.jsonl")],
                             calibration=sample_calibration, out=tmp_path / "out",
                             n_boot=N_BOOT)
    entry = result.models["echo-model"].raw.missing_answers
    assert entry.n_pairs == 30 and entry.by_side == {"for": 30} and len(entry.pairs) == 30
    line = next(line for line in (tmp_path / "out" / "report.md").read_text().splitlines()
                if line.startswith("| echo-model | 30 |"))
    assert line.count("(for)") == 20 and "and 10 more" in line
    assert math.isfinite(result.models["echo-model"].raw.metrics["PAC"].value)
    assert result.models["echo-model"].raw.n_judged == len(frame) - 30


def test_a_pair_made_by_hand_is_marked_too():
    pair = Pair(id=1, set_name="s", issue_description="i", for_question="q1", against_question="q2",
                for_response="An answer.", against_response=" No Response ")
    assert pair.missing_answers == ("against_response",) and pair.missing_side == "against"
    assert not Pair(id=2, set_name="s", issue_description="i", for_question="q1", against_question="q2",
                    for_response="a", against_response="b").missing_answers


def test_the_injection_set_and_the_default_sets_never_send_placeholders(server, tmp_path, api_key):
    """injection-0 is built from unaligned-0: a placeholder gets no note, so it stays unjudged there too."""
    server.by_marker = {MARK: "401"}
    missing = write_sets(tmp_path / "cal", "jsonl")
    judge = write_judge(tmp_path, server.base_url)
    result = calibrate.fit(str(judge), data=str(tmp_path / "cal"), cache=tmp_path / "c.sqlite3",
                           n_boot=N_BOOT)  # the default sets, injection-0 included
    assert placeholder_requests(server) == []
    assert result.sets["injection-0"].failures == {"missing_answer": len(missing["unaligned-0"])}


def test_batch_submit_sends_no_placeholder(server, tmp_path, api_key):
    write_sets(tmp_path / "cal", "jsonl")
    judge = write_judge(tmp_path, server.base_url)
    result = cli("batch", "submit", "--judge", str(judge), "--data", str(tmp_path / "cal"), "--sets",
                 ",".join(CALIBRATION_SETS), "--cache", str(tmp_path / "c.sqlite3"))
    assert result.returncode == 0, result.stderr
    items = {p.content_key: p for s in load_calibration_sets(str(tmp_path / "cal"), CALIBRATION_SETS).values()
             for p in s.pairs}  # equal content is one request
    missing = sum(bool(p.missing_answers) for p in items.values())
    assert missing >= 4 * len(PLACEHOLDERS) - 4 and f"{missing} without an answer (never judged)" in result.stdout
    sent = [line for batch in server.files.values() for line in batch["content"].decode().splitlines()]
    assert sent and not [line for line in sent if MARK in line]
    assert len(sent) == len(items) - missing


def test_a_comparison_does_not_blame_the_judges_for_missing_answers(tmp_path):
    write_sets(tmp_path / "cal", "jsonl")
    result = calibrate.compare(["heuristic-strict"], data=str(tmp_path / "cal"), sets=CALIBRATION_SETS,
                               n_boot=N_BOOT)
    for judge in result.judges.values():
        assert judge.failures.failure_rate == 0.0 and "missing_answer" not in judge.failures.failures_by_reason


def test_a_fit_with_no_answer_at_all_says_it_is_the_data(tmp_path):
    root = tmp_path / "cal"
    root.mkdir()
    for name in CALIBRATION_SETS:
        frame = sample_frame(name).head(3).assign(for_response="No response")
        write_set(frame, root / f"{name}.jsonl")
    with pytest.raises(calibrate.CalibrateError, match=r"^data .*none of the 12 calibration pairs holds two answers"):
        calibrate.fit("heuristic", data=str(root), sets=CALIBRATION_SETS)
