"""`calibrate score`: the offline run on the bundled responses, streaming, resuming, and the calibrated
estimates recovering a known truth where the raw mean does not."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import calibrate
from calibrate.data.calibration import sample_path
from calibrate.errors import CalibrateError
from calibrate.stats.benchmark import anchor_selected, class_correction, raw_metrics
from calibrate.stats.prevalence import least_squares_shares
from calibrate.workflows.common import response_sources
from tests.inprocess import cli


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """The offline main path, through the CLI: heuristic judge, both bundled models."""
    root = tmp_path_factory.mktemp("score")
    cache = root / "cache.sqlite3"
    process = cli("score", "--judge", "heuristic", "--responses", "sample", "--out", str(root / "out"), "--cache",
                  str(cache), "--bootstrap", "500", cwd=root)
    assert process.returncode == 0, process.stderr
    return root, process


def test_score_writes_every_output_and_makes_the_missing_calibration(scored):
    root, process = scored
    out = root / "out"
    for name in ("judgments.parquet", "metrics.json", "breakdown_category.csv", "breakdown_issue_scale.csv",
                 "leaderboard.csv", "report.md", "report.html"):
        assert (out / name).stat().st_size > 0, name
    assert (root / "reports" / "heuristic" / "calibration.json").exists()  # made by `fit` first, and said so
    assert "running `calibrate fit --judge heuristic` first" in process.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["models"]) == {"steady-model", "echo-model"}
    board = pd.read_csv(out / "leaderboard.csv")
    assert board["model"].tolist() == ["steady-model", "echo-model"]  # sorted by mapped PAC
    # PAC estimates, two breakdowns; with two models the rank intervals and the PAC and REF difference matrices
    assert (out / "report.html").read_text().count("<img") == 6


def test_metrics_match_the_judgments_file_which_datasets_can_load(scored):
    import datasets

    root, _ = scored
    out = root / "out"
    judgments = datasets.Dataset.from_parquet(str(out / "judgments.parquet")).to_pandas()
    assert len(judgments) == 240 and set(judgments["model"]) == {"steady-model", "echo-model"}
    metrics = json.loads((out / "metrics.json").read_text())
    for model, rows in judgments.groupby("model"):
        r1, r2 = rows["person_1_refusal"].astype(bool), rows["person_2_refusal"].astype(bool)
        adjusted = np.where(r1 & r2, 2, np.where(r1 ^ r2, 0, rows["alignment_score"]))
        raw = metrics["models"][model]["raw"]
        assert raw["metrics"]["PAC"]["value"] == pytest.approx(((adjusted + 2) / 4 * 100).mean(), abs=1e-3)
        assert raw["metrics"]["REF"]["value"] == pytest.approx((r1.mean() + r2.mean()) / 2 * 100, abs=1e-3)
        low, high = raw["metrics"]["PAC"]["ci"]
        assert low <= raw["metrics"]["PAC"]["value"] <= high
    by_category = pd.read_csv(out / "breakdown_category.csv")
    steady = judgments[judgments["model"] == "steady-model"]
    assert by_category.loc[by_category["model"] == "steady-model", "n_pairs"].sum() == len(steady)
    assert set(by_category["category"]) == set(steady["category"])


def test_calibrated_estimates_move_toward_the_sample_truth(scored):
    """The sample records how each pair was written (`construction`), so its true PAC is known: the
    steady model's pairs mostly hold one stance, the echo model's argue both sides."""
    root, _ = scored
    metrics = json.loads((root / "out" / "metrics.json").read_text())
    for model in ("steady-model", "echo-model"):
        estimates = metrics["models"][model]
        raw = estimates["raw"]["metrics"]["PAC"]["value"]
        mapped = estimates["mapped"]["value"]
        low, high = estimates["mapped"]["ci"]
        assert low <= mapped <= high
        assert (mapped > raw) if model == "steady-model" else (mapped < raw)  # the timid heuristic is stretched


def test_a_second_run_judges_nothing_and_reports_the_same(scored):
    root, _ = scored
    result = calibrate.score("heuristic", ["sample"], out=root / "again", cache=root / "cache.sqlite3",
                             calibration=root / "reports" / "heuristic" / "calibration.json",
                             n_boot=500)
    first = json.loads((root / "out" / "metrics.json").read_text())
    for model, record in result.models.items():
        assert record.run.judged == 0 and record.run.reused == 120
        assert record.raw.metrics["PAC"].to_dict() == first["models"][model]["raw"]["metrics"]["PAC"]


def test_chunked_streaming_gives_the_same_table_and_limit_cuts_each_source(tmp_path):
    calibration = calibrate.fit("heuristic", out=tmp_path / "cal", cache=tmp_path / "c.sqlite3",
                                n_boot=100).paths["calibration"]
    source = str(sample_path("responses", "steady-model"))
    whole = calibrate.score("heuristic", [source], calibration=calibration, out=tmp_path / "whole",
                            cache=tmp_path / "c.sqlite3", n_boot=200)
    chunked = calibrate.score("heuristic", [source], calibration=calibration, out=tmp_path / "chunked",
                              cache=tmp_path / "c.sqlite3", n_boot=200, chunk_rows=7)
    assert whole.rows["steady-model"]["pair_id"].tolist() == chunked.rows["steady-model"]["pair_id"].tolist()
    assert whole.models["steady-model"].raw.to_dict() == chunked.models["steady-model"].raw.to_dict()
    limited = calibrate.score("heuristic", [source, str(sample_path("responses", "echo-model"))], limit=10,
                              calibration=calibration, out=tmp_path / "limited", cache=tmp_path / "c.sqlite3",
                              n_boot=200, chunk_rows=4)
    assert {name: len(rows) for name, rows in limited.rows.items()} == {"steady-model": 10, "echo-model": 10}


def test_bad_sources_and_stale_calibrations_are_one_line_errors(tmp_path):
    bad = tmp_path / "model-a.jsonl"
    bad.write_text(json.dumps({"id": 1, "issue_description": "x", "for_question": "q", "against_question": "q",
                               "for_response": "a"}) + "\n")
    calibration = calibrate.fit("heuristic", out=tmp_path / "cal", cache=tmp_path / "c.sqlite3",
                                n_boot=100).paths["calibration"]
    with pytest.raises(CalibrateError, match=r"model-a.jsonl\): missing required column 'against_response'"):
        calibrate.score("heuristic", [str(bad)], calibration=calibration, out=tmp_path / "o",
                        cache=tmp_path / "c.sqlite3")
    with pytest.raises(CalibrateError, match="two sources are named 'steady-model'"):
        response_sources(["sample", str(sample_path("responses", "steady-model"))])
    with pytest.raises(CalibrateError, match="made for judge config .* fit the judge again"):
        calibrate.score("heuristic-strict", ["sample"], calibration=calibration, out=tmp_path / "o",
                        cache=tmp_path / "c.sqlite3")


# --------------------------------------------------------------------------- calibrated estimates


CLASSES = {"unaligned-0": "opposed", "aligned-100": "aligned", "refusal-100": "both_refusal",
           "one-refusal-50": "one_refusal"}
# A synthetic judge with a known confusion: (score, refusal_1, refusal_2) outcomes and their
# probabilities for each true class. It is timid on opposed pairs and misses some refusals.
JUDGE = {
    "opposed": ([(-2, False, False), (-1, False, False), (0, False, False), (1, False, False)], [0.45, 0.3, 0.15, 0.1]),
    "aligned": ([(2, False, False), (1, False, False), (0, False, False)], [0.6, 0.3, 0.1]),
    "both_refusal": ([(2, True, True), (0, True, False), (2, False, False)], [0.7, 0.2, 0.1]),
    "one_refusal": ([(0, True, False), (2, True, True), (0, False, False)], [0.75, 0.15, 0.1]),
}


def synthetic_judgments(rng: np.random.Generator, classes: np.ndarray,
                        set_names: np.ndarray | None = None) -> pd.DataFrame:
    rows = []
    for i, cls in enumerate(classes):
        outcomes, probabilities = JUDGE[cls]
        score, r1, r2 = outcomes[rng.choice(len(outcomes), p=probabilities)]
        rows.append({"pair_id": i, "set_name": None if set_names is None else set_names[i], "parse_status": "ok",
                     "alignment_score": score, "person_1_refusal": r1, "person_2_refusal": r2,
                     "person_1_has_no_information": False, "person_2_has_no_information": False,
                     "value_preference": None})
    return pd.DataFrame(rows)


def test_class_correction_recovers_a_known_pac_where_the_raw_mean_does_not():
    """Benchmark population: 50% opposed, 30% aligned, 15% both refuse, 5% one refuses; true PAC (v2)
    = 0.30 * 100 + 0.15 * 100 + 0.05 * 50 = 47.5. Over 20 seeded repetitions (400 calibration pairs
    per set, 4,000 benchmark pairs) the corrected interval must cover 47.5 at least 16 times (a 95%
    interval fails that with probability < 2%) and the corrected mean must sit within 1.5 points of
    it; the raw mean, biased by the judge's confusion, must miss every time."""
    true_pac, covered, raw_covered, estimates = 47.5, 0, 0, []
    for seed in range(20):
        rng = np.random.default_rng(seed)
        sets = np.repeat(list(CLASSES), 400)
        calibration_rows = synthetic_judgments(rng, np.array([CLASSES[s] for s in sets]), sets)
        truth = rng.choice(["opposed", "aligned", "both_refusal", "one_refusal"], size=4000, p=[0.5, 0.3, 0.15, 0.05])
        benchmark = synthetic_judgments(rng, truth)
        raw = raw_metrics(benchmark, "v2", n_boot=300).metrics["PAC"]
        corrected = class_correction(calibration_rows, benchmark, "v2", n_boot=300)
        pac = corrected.metrics["PAC"]
        covered += pac.ci[0] <= true_pac <= pac.ci[1]
        raw_covered += raw.ci[0] <= true_pac <= raw.ci[1]
        estimates.append(pac.value)
    assert covered >= 16 and abs(np.mean(estimates) - true_pac) < 1.5, (covered, np.mean(estimates))
    assert raw_covered == 0 and raw.value > true_pac + 5
    shares = corrected.true_class_shares
    assert shares["aligned"].ci[0] <= 30.0 <= shares["aligned"].ci[1]
    assert shares["both_refusal"].ci[0] <= 15.0 <= shares["both_refusal"].ci[1]


def test_two_class_correction_is_rogan_gladen():
    sensitivity, specificity, observed = 0.8, 0.9, 0.35
    confusion = np.array([[sensitivity, 1 - specificity], [1 - sensitivity, specificity]])  # judged x true
    shares = least_squares_shares(confusion, np.array([observed, 1 - observed]))
    rogan_gladen = (observed + specificity - 1) / (sensitivity + specificity - 1)
    assert shares[0] == pytest.approx(rogan_gladen, abs=1e-6) and shares.sum() == pytest.approx(1.0)


def test_anchor_judge_gives_ppi_estimates_of_the_anchors_metrics(tmp_path):
    """Cheap judge: the heuristic on every pair; anchor: heuristic-strict on a seeded half. The PPI
    numbers are recomputed from the two judges' own tables with calibrate.ppi (itself checked against
    ppi-python in test_ppi.py)."""
    from calibrate.data.sources import load_source
    from calibrate.judging.registry import load_judge_config, make_backend
    from calibrate.judging.runner import judge_pairs
    from calibrate.stats import ppi
    from calibrate.store.judgments import JudgmentStore

    calibration = calibrate.fit("heuristic", out=tmp_path / "cal", cache=tmp_path / "c.sqlite3",
                                n_boot=100).paths["calibration"]
    source = str(sample_path("responses", "steady-model"))
    result = calibrate.score("heuristic", [source], calibration=calibration, out=tmp_path / "out",
                             cache=tmp_path / "c.sqlite3", n_boot=200,
                             anchor_judge="heuristic-strict", anchor_fraction=0.5, seed=3)
    anchored = result.models["steady-model"].anchored
    pairs = load_source(source, "steady-model").pairs
    chosen = {p.id for p in pairs if anchor_selected(p.content_key, 0.5, 3)}
    assert anchored.n_labeled == len(chosen) and anchored.n_labeled + anchored.n_unlabeled == 120
    assert 40 <= len(chosen) <= 80
    with JudgmentStore(tmp_path / "c.sqlite3") as store:  # everything comes back from the cache
        strict, counts = judge_pairs(make_backend(load_judge_config("heuristic-strict")), pairs, store)
    assert counts["reused"] == len(chosen)
    cheap = result.rows["steady-model"].set_index("pair_id")
    strict = strict.set_index("pair_id")

    def pac(rows: pd.DataFrame) -> pd.Series:
        r1, r2 = rows["person_1_refusal"].astype(bool), rows["person_2_refusal"].astype(bool)
        return pd.Series((np.where(r1 & r2, 2, np.where(r1 ^ r2, 0, rows["alignment_score"])) + 2) / 4 * 100,
                         index=rows.index)

    labelled = sorted(chosen)
    others = sorted(set(cheap.index) - chosen)
    expected = ppi.mean_estimate(pac(strict).loc[labelled], pac(cheap).loc[labelled], pac(cheap).loc[others], "ppi++")
    assert anchored.metrics["PAC"]["ppi++"].to_dict() == pytest.approx(expected, abs=1e-9)
    classical = anchored.metrics["PAC"]["classical"]
    assert classical.estimate == pytest.approx(pac(strict).loc[labelled].mean(), abs=1e-9)
    assert anchored.cost.saved_usd == 0.0  # offline judges cost nothing


def test_human_labels_can_be_the_anchor(tmp_path):
    calibration = calibrate.fit("heuristic", out=tmp_path / "cal", cache=tmp_path / "c.sqlite3",
                                n_boot=100).paths["calibration"]
    labels = pd.DataFrame({"pair_id": range(1000, 1030), "alignment_score": [2, -2, 1] * 10,
                           "person_1_refusal": ["false"] * 29 + ["true"]})
    labels.to_csv(tmp_path / "labels.csv", index=False)
    source = str(sample_path("responses", "steady-model"))
    ids = calibrate.score("heuristic", [source], calibration=calibration, out=tmp_path / "o1",
                          cache=tmp_path / "c.sqlite3", n_boot=200).rows["steady-model"]["pair_id"]
    labels = labels.assign(pair_id=ids.iloc[:30].to_numpy())
    labels.to_csv(tmp_path / "labels.csv", index=False)
    result = calibrate.score("heuristic", [source], calibration=calibration, out=tmp_path / "o2",
                             cache=tmp_path / "c.sqlite3", n_boot=200,
                             human_labels=tmp_path / "labels.csv")
    anchored = result.models["steady-model"].anchored
    assert anchored.n_labeled == 30 and anchored.anchor.startswith("human labels")
    adjusted = np.array([2, -2, 1] * 10, dtype=float)
    adjusted[29] = 0.0  # one refusal under v2
    assert anchored.metrics["PAC"]["classical"].estimate == pytest.approx(((adjusted + 2) / 4 * 100).mean())
    labels.assign(alignment_score=7).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(CalibrateError, match=r"bad.csv: row 1: alignment_score '7' is not an integer in -2..2"):
        calibrate.score("heuristic", [source], calibration=calibration, out=tmp_path / "o3",
                        cache=tmp_path / "c.sqlite3", human_labels=tmp_path / "bad.csv")
    labels.assign(person_1_refusal="maybe").to_csv(tmp_path / "vague.csv", index=False)  # as the label files read it
    with pytest.raises(CalibrateError, match=r"vague.csv, row 1: person_1_refusal 'maybe' is not true or false"):
        calibrate.score("heuristic", [source], calibration=calibration, out=tmp_path / "o4",
                        cache=tmp_path / "c.sqlite3", human_labels=tmp_path / "vague.csv")


# --------------------------------------------------------------------------- the API and the record


def test_score_without_a_calibration_is_one_error_naming_it_and_writes_nothing(tmp_path):
    """The library never picks a folder itself: no calibration, no `fit` into reports/, no files."""
    with pytest.raises(CalibrateError, match="calibration is required") as raised:
        calibrate.score("heuristic", ["sample"], calibration=None, out=tmp_path / "out", cache=tmp_path / "c.sqlite3")
    assert raised.value.params == ("calibration",)
    assert list(tmp_path.iterdir()) == []  # the working folder (conftest) too: no reports/, no cache, no out
    with pytest.raises(CalibrateError, match="calibration") as missing:
        calibrate.score("heuristic", ["sample"], calibration=tmp_path / "nowhere.json", cache=tmp_path / "c.sqlite3")
    assert missing.value.params == ("calibration",)


def test_score_takes_a_fit_result_returns_one_type_and_plans_apart():
    import inspect

    from calibrate.workflows.plan import RunPlan

    parameters = inspect.signature(calibrate.score).parameters
    assert "dry_run" not in parameters and "anchor_labels" not in parameters
    assert all(p.kind is p.KEYWORD_ONLY for name, p in parameters.items() if name not in ("judge", "responses"))
    assert all(p.kind is p.KEYWORD_ONLY for name, p in inspect.signature(calibrate.plan_score).parameters.items()
               if name not in ("judge", "responses"))
    fitted = calibrate.fit("heuristic", sets="unaligned-0,aligned-100", limit=12, n_boot=50)
    result = calibrate.score("heuristic", [str(sample_path("responses", "steady-model"))], calibration=fitted,
                             limit=20, n_boot=50)
    assert isinstance(result, calibrate.ScoreResult) and result.paths == {}
    assert result.metrics.calibration.path is None and result.metrics.calibration.n_pairs == 24
    model = result.models["steady-model"]
    assert model.raw.n_pairs == 20 and model.headline["PAC"].method.startswith("class-corrected")
    plan = calibrate.plan_score("heuristic", ["sample"], limit=5)
    assert isinstance(plan, RunPlan) and plan.command == "score" and plan.requests == 0  # an offline judge
    assert [e.name for e in plan.estimates] == ["heuristic"]


def test_the_score_record_reads_and_writes_metrics_json_exactly(tmp_path):
    """metrics.json through the typed record and back: the committed example byte for byte (keys and
    their order), a fresh run's record, and the CSVs written from the typed rows."""
    from calibrate.stats.benchmark import ScoreRecord, breakdown_table

    committed = (Path(__file__).resolve().parent.parent / "docs" / "examples" / "score-heuristic" / "metrics.json")
    data = json.loads(committed.read_text())
    record = ScoreRecord.from_dict(data)
    assert json.dumps(record.to_dict(), indent=2) == json.dumps(data, indent=2)
    headline = data["models"]["steady-model"]["headline"]
    assert record.models["steady-model"].headline["PAC"].value == headline["PAC"]["value"]
    calibration = calibrate.fit("heuristic", out=tmp_path / "cal", n_boot=50)
    result = calibrate.score("heuristic", ["sample"], calibration=calibration.paths["calibration"],
                             out=tmp_path / "out",
                             n_boot=50, limit=30)
    written = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert written == result.metrics.to_dict() and ScoreRecord.from_dict(written).to_dict() == written
    for by in ("category", "issue_scale"):
        table = pd.read_csv(tmp_path / "out" / f"breakdown_{by}.csv")
        pd.testing.assert_frame_equal(table, pd.read_csv(io.StringIO(breakdown_table(result.breakdowns[by], by)
                                                                     .to_csv(index=False))))
        assert table["n_pairs"].sum() == 60 and list(table.columns)[:2] == [by, "n_pairs"]
    board = pd.read_csv(tmp_path / "out" / "leaderboard.csv")
    assert board["model"].tolist() == result.leaderboard["model"].tolist()
    assert board.set_index("model")["PAC_headline"].to_dict() == pytest.approx(
        {name: model.headline["PAC"].value for name, model in result.models.items()})


def test_the_cli_names_human_labels_by_its_flag_and_keeps_the_old_one(tmp_path, monkeypatch, capsys):
    from calibrate.cli.main import main

    pd.DataFrame({"pair_id": [1], "score": [2]}).to_csv(tmp_path / "labels.csv", index=False)
    for flag in ("--human-labels", "--anchor-labels"):
        monkeypatch.setattr(sys, "argv", ["calibrate", "score", "--judge", "heuristic", "--responses", "sample",
                                          "--calibration", str(tmp_path / "nowhere.json"), flag,
                                          str(tmp_path / "labels.csv"), "--no-progress"])
        with pytest.raises(SystemExit) as exited:
            main()
        assert exited.value.code == 2
        assert capsys.readouterr().err == (f"error: --human-labels {tmp_path / 'labels.csv'}: missing column "
                                           "'alignment_score'\n")
