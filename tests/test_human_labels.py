"""Human labels: the long label file, the labelling study and its API, the paper's Table 4 against
scikit-learn, one judge against humans on benchmark answers, and labels as the scoring anchor.
(The page itself, in a browser, is tests/test_annotate_browser.py.)"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score

import calibrate
from calibrate.data.calibration import sample_path
from calibrate.data.labels import LABEL_FLAGS, read_labels
from calibrate.errors import CalibrateError
from calibrate.stats.comparison import Comparison
from calibrate.stats.humans import HumanAgreement, annotator_tables, consensus
from calibrate.stats.metrics import per_pair_values
from calibrate.store.labels import LabelStore
from calibrate.workflows.annotate import Session, build_study, export_labels
from calibrate.workflows.annotate_web import TOKEN_HEADER, allowed_hosts, create_app
from calibrate.workflows.compare import human_agreement
from tests import inprocess

SCORES = [-2, -1, 0, 1, 2]


def synthetic_labels(n: int, seed: int) -> pd.DataFrame:
    """Two made-up annotators (not real people): the second copies the first with noise; the first
    leaves a few flags out, and each labels a few items the other did not."""
    rng = np.random.default_rng(seed)
    score = rng.integers(-2, 3, n)
    flags = rng.random((n, 4)) < 0.25
    rows = []
    for name, noise in (("ann", 0.0), ("bob", 0.3)):
        changed = rng.random(n) < noise
        scores = np.where(changed, np.clip(score + rng.choice([-1, 1], n), -2, 2), score)
        given = flags ^ (rng.random((n, 4)) < noise / 2)
        for i in range(n):
            if (name == "ann" and i % 17 == 5) or (name == "bob" and i % 13 == 7):
                continue  # not labelled by this one
            row = {"item": f"aligned-100/{1000 + i}", "annotator": name, "alignment_score": int(scores[i])}
            row |= {flag: bool(given[i, j]) for j, flag in enumerate(LABEL_FLAGS)}
            if name == "ann" and i % 11 == 3:
                row["person_2_has_no_information"] = ""  # not given: only this unit is left out
            rows.append(row)
    return pd.DataFrame(rows)


def test_table4_of_two_annotators_matches_scikit_learn(tmp_path):
    frame = synthetic_labels(120, seed=4)
    frame.to_csv(tmp_path / "labels.csv", index=False)
    record = human_agreement(tmp_path / "labels.csv", rule="v3", n_boot=300, seed=1)
    by_field = {row.field: row for row in record.table if row.rater_b == "bob"}
    ann, bob = (frame[frame["annotator"] == name].set_index("item") for name in ("ann", "bob"))
    shared = ann.index.intersection(bob.index)
    x, y = ann.loc[shared], bob.loc[shared]
    score = by_field["score"]
    assert score.n == len(shared) == sum(1 for i in range(120) if i % 17 != 5 and i % 13 != 7)
    assert score.kappa_quadratic == pytest.approx(
        cohen_kappa_score(x["alignment_score"], y["alignment_score"], labels=SCORES, weights="quadratic"), abs=1e-9)
    assert score.kappa == pytest.approx(
        cohen_kappa_score(x["alignment_score"], y["alignment_score"], labels=SCORES), abs=1e-9)
    assert score.agreement == pytest.approx(100 * np.mean(x["alignment_score"] == y["alignment_score"]), abs=1e-9)
    for field, columns in (("refusal", LABEL_FLAGS[:2]), ("no_information", LABEL_FLAGS[2:])):
        units = pd.concat([pd.DataFrame({"a": x[c], "b": y[c]}) for c in columns])
        units = units[units["a"] != ""]  # the flags ann left out are not compared
        a, b = units["a"].astype(bool), units["b"].astype(bool)
        row = by_field[field]
        assert row.n == len(units)
        assert row.kappa == pytest.approx(cohen_kappa_score(a, b, labels=[False, True]), abs=1e-9)
        assert row.agreement == pytest.approx(100 * np.mean(a == b), abs=1e-9)
    for row in by_field.values():  # intervals hold the estimate and are not degenerate
        for name, (low, high) in row.ci.items():
            assert low < getattr(row, name) < high
    read = read_labels(tmp_path / "labels.csv")
    for name in ("ann", "bob"):
        rater = annotator_tables(read)[name]
        pac = per_pair_values(rater["alignment_score"], *(rater[c].fillna(0).astype(bool) for c in LABEL_FLAGS), "v3")
        assert record.pac[name] == pytest.approx(pac["PAC"].mean(), abs=1e-4)
    assert record.paper.human_human.score["kappa_quadratic"] == 0.68
    assert HumanAgreement.from_dict(json.loads(json.dumps(record.to_dict()))) == record  # round trip

    for flag in ("--human-labels", "--human"):  # --human: the old flag, kept
        cli = inprocess.cli("agreement", flag, str(tmp_path / "labels.csv"), "--rule", "v3", "--bootstrap", "300",
                            "--seed", "1")
        assert cli.returncode == 0, cli.stderr
        assert json.loads(cli.stdout) == json.loads(json.dumps(record.to_dict()))


def test_consensus_is_the_median_score_and_the_flag_majority():
    labels = pd.DataFrame({"item": ["s/1"] * 3 + ["s/2"] * 2, "annotator": ["a", "b", "c", "a", "b"],
                           "alignment_score": [2.0, 1.0, -2.0, 1.0, 2.0],
                           "person_1_refusal": [1.0, 1.0, 0.0, 1.0, 0.0],
                           "person_2_refusal": [0.0, np.nan, np.nan, 0, 0],
                           "person_1_has_no_information": [np.nan] * 5, "person_2_has_no_information": [0.0] * 5})
    agreed = consensus(annotator_tables(labels))
    assert agreed.loc["s/1", "alignment_score"] == 1 and agreed.loc["s/2", "alignment_score"] == 1  # 1.5 toward 0
    assert agreed.loc["s/1", "person_1_refusal"] == 1 and np.isnan(agreed.loc["s/2", "person_1_refusal"])  # a tie
    assert agreed.loc["s/1", "person_2_refusal"] == 0 and np.isnan(agreed.loc["s/1", "person_1_has_no_information"])


@pytest.mark.parametrize("text, message", [
    ("item,annotator,alignment_score\naligned-100/1,ann,3\n", r"row 1: alignment_score 3 is not an integer"),
    ("item,annotator,alignment_score\naligned-100/1,ann,true\n", r"row 1: alignment_score .* not an integer"),
    ("item,annotator,alignment_score,person_1_refusal\naligned-100/1,ann,1,maybe\n",
     r"row 1: person_1_refusal 'maybe'"),
    ("item,annotator,alignment_score\naligned-100/1,ann,1\naligned-100/1.0,ann,2\n",
     r"'ann' labels item aligned-100/1 twice"),
    ("item,annotator,alignment_score\naligned-100,ann,1\n", r"row 1: 'item' must be '<set_name>/<pair_id>'"),
    ("item,annotator,alignment_score\naligned-100/1,,1\n", r"row 1: 'annotator' must be a name"),
    ("annotator,alignment_score\nann,1\n", r"needs a 'item' column"),
])
def test_bad_label_files_are_one_line_naming_the_file(tmp_path, text, message):
    (tmp_path / "labels.csv").write_text(text)
    with pytest.raises(CalibrateError, match=message) as caught:
        read_labels(tmp_path / "labels.csv")
    assert "\n" not in str(caught.value) and "labels.csv" in str(caught.value)


def test_wide_and_long_files_read_alike(tmp_path):
    (tmp_path / "wide.csv").write_text("set_name,pair_id,ann,bob\naligned-100,1,2,\nunaligned-0,7.0,-2,-1\n")
    (tmp_path / "long.jsonl").write_text(
        '{"item": "aligned-100/1", "annotator": "ann", "alignment_score": 2}\n'
        '{"item": "unaligned-0/7", "annotator": "ann", "alignment_score": -2}\n'
        '{"item": "unaligned-0/7", "annotator": "bob", "alignment_score": -1, "person_1_refusal": false}\n')
    wide, long = read_labels(tmp_path / "wide.csv"), read_labels(tmp_path / "long.jsonl")
    key = ["item", "annotator"]
    wide = wide.dropna(subset=["alignment_score"]).sort_values(key).reset_index(drop=True)
    long = long.sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(wide[[*key, "alignment_score"]], long[[*key, "alignment_score"]])
    assert long["person_1_refusal"].isna().tolist() == [True, True, False] and long["person_1_refusal"][2] == 0.0
    assert wide["person_1_refusal"].isna().all()  # the wide format has scores only


def test_study_is_shared_its_labels_kept_and_bad_values_refused(tmp_path):
    study = build_study("sample", ["unaligned-0", "aligned-100"], sample=8, seed=3, stratify="set")
    assert sorted(item.split("/")[0] for item in study.items) == ["aligned-100"] * 4 + ["unaligned-0"] * 4
    labels = tmp_path / "labels.sqlite3"
    with LabelStore(labels) as store:
        ann, bob = Session(study, store, "ann"), Session(study, store, "bob")
        assert sorted(ann.order) == sorted(bob.order) == list(range(8)) and ann.order != bob.order
        app = create_app(ann, token="secret", hosts=allowed_hosts("127.0.0.1", 5000))
        app.config["SERVER_NAME"] = "127.0.0.1:5000"  # the test client's Host
        client = app.test_client()
        client.environ_base |= {"HTTP_ORIGIN": "http://127.0.0.1:5000",
                                f"HTTP_{TOKEN_HEADER.upper().replace('-', '_')}": "secret"}
        for form, message in (({"score": "7"}, "score must be a whole number from -2 to 2, got '7'"),
                              ({}, "choose a score"),
                              ({"score": "1", "refusal_1": "maybe"}, "refusal_1 must be on or off"),
                              ({"score": "1", "alignment_score": "1"}, "unknown field 'alignment_score'")):
            reply = client.post("/api/items/0/label", data=form)
            assert reply.status_code == 400 and message in reply.get_json()["error"]
        assert client.post("/api/items/8/label", data={"score": "1"}).status_code == 400  # past the last pair
        assert client.post("/api/items/0/label", data={"score": "-1", "no_info_2": "on", "note": "hm"}).get_json() \
            == {"position": 1, "total": 8, "labelled": 1}
        assert client.post("/api/position", data={"position": "5"}).status_code == 200
    with pytest.raises(CalibrateError, match="holds a study of 8 other items"):
        with LabelStore(labels) as store:
            Session(build_study("sample", ["unaligned-0", "aligned-100"], sample=8, seed=4), store, "cy")
    with LabelStore(labels) as store:  # a new server on the same file: the label and the position are kept
        again = Session(study, store, "ann")
        assert again.state() == {"position": 5, "total": 8, "labelled": 1}
        assert again.view(0)["label"] == {"score": -1, "refusal_1": False, "refusal_2": False, "no_info_1": False,
                                          "no_info_2": True, "note": "hm"}
        assert Session(study, store, "bob").view(0)["label"] is None
    exported = export_labels(labels, tmp_path / "labels.jsonl")
    assert exported[["item", "annotator", "alignment_score", "person_2_has_no_information", "note"]].values.tolist() \
        == [[study.items[ann.order[0]], "ann", -1, True, "hm"]]
    assert read_labels(tmp_path / "labels.jsonl")["person_1_refusal"].tolist() == [0.0]


def test_one_judge_against_humans_on_benchmark_answers(tmp_path):
    source = sample_path("responses", "steady-model")
    pairs = build_study(str(source), sample=12, seed=0)
    rng = np.random.default_rng(0)
    rows = [{"item": item, "annotator": name, "alignment_score": int(rng.integers(-2, 3)),
             "person_1_refusal": bool(rng.random() < 0.3), "person_2_refusal": bool(rng.random() < 0.3)}
            for item in pairs.items for name in ("ann", "bob")]
    pd.DataFrame(rows).to_csv(tmp_path / "labels.csv", index=False)
    with pytest.raises(CalibrateError, match="comes from 'steady-model', which is neither a judged set"):
        calibrate.compare(["heuristic"], baselines=False, human_labels=tmp_path / "labels.csv")
    pd.DataFrame([*rows, {**rows[0], "item": "steady-model/999999"}]).to_csv(tmp_path / "more.csv", index=False)
    with pytest.raises(CalibrateError, match="item steady-model/999999 is not a pair of .*steady-model.jsonl"):
        calibrate.compare(["heuristic"], baselines=False, human_labels=tmp_path / "more.csv", responses=[str(source)])
    result = calibrate.compare(["heuristic"], baselines=False, human_labels=tmp_path / "labels.csv",
                               responses=[str(source)], sets=["aligned-100"], limit=2, n_boot=200)
    humans = result.comparison.humans
    assert humans.n_items == 12 and humans.responses["steady-model"].n_pairs == 12
    assert humans.n_labelled_not_judged == 0 and humans.source.endswith("labels.csv")
    judged = result.judgments[result.judgments["set_name"] == "steady-model"]
    judged = judged.set_index("steady-model/" + judged["pair_id"].astype(str))
    ann = pd.DataFrame(rows[::2]).set_index("item")
    row = next(r for r in humans.table if (r.rater_a, r.rater_b, r.field) == ("heuristic", "ann", "score"))
    assert row.kappa_quadratic == pytest.approx(cohen_kappa_score(
        judged.loc[ann.index, "alignment_score"], ann["alignment_score"], labels=SCORES, weights="quadratic"), abs=1e-9)
    flags = next(r for r in humans.table if (r.rater_a, r.rater_b, r.field) == ("heuristic", "ann", "refusal"))
    assert flags.n == 24  # the no-information flags were not given: only refusals compared, per person
    board = result.leaderboard.set_index("judge")
    assert board.loc["humans", "human_score_kappa_quadratic"] == pytest.approx(next(
        r.kappa_quadratic for r in humans.table if r.rater_b == "bob" and r.field == "score"), abs=1e-4)
    assert board.loc["heuristic", "human_pac"] == humans.pac["heuristic"]
    assert Comparison.from_dict(json.loads(json.dumps(result.comparison.to_dict()))) == result.comparison


def test_long_labels_of_two_annotators_are_the_scoring_anchor(tmp_path):
    source = str(sample_path("responses", "steady-model"))
    study = build_study(source, sample=20, seed=1)
    labels = pd.DataFrame([{"item": item, "annotator": name, "alignment_score": score,
                            "person_1_refusal": name == "ann" and i == 0}
                           for i, item in enumerate(study.items)
                           for name, score in (("ann", 2 if i % 2 else -2), ("bob", 1 if i % 2 else -2))])
    labels.to_csv(tmp_path / "labels.csv", index=False)
    calibration = calibrate.fit("heuristic", sets=["aligned-100", "unaligned-0"], out=tmp_path / "cal",
                                n_boot=100).paths["calibration"]
    result = calibrate.score("heuristic", [source], calibration=calibration, human_labels=tmp_path / "labels.csv",
                             n_boot=100)
    anchored = result.models["steady-model"].anchored
    # consensus of 2 and 1 is 1 (a half toward 0); the one refusal flag is a tie, so not a refusal
    assert anchored.n_labeled == 20
    expected = ((np.array([-2, 1] * 10) + 2) / 4 * 100).mean()
    assert anchored.metrics["PAC"]["classical"].estimate == pytest.approx(expected)
