"""Labels drawn with unequal, known inclusion probabilities (`annotate --select`): the weighted PPI++
(ppi.weighted_estimate) against ppi_py and a direct Horvitz-Thompson computation, and its coverage."""

from __future__ import annotations

import numpy as np
import pytest

from calibrate.errors import CalibrateError
from calibrate.stats.ppi import mean_estimate, weighted_estimate


def _stratified(seed: int, sizes=(600, 300, 100), labels=(20, 30, 50)):
    """A population in three strata (the judge's classes), its predictions, and a fixed-size stratified draw."""
    rng = np.random.default_rng(seed)
    stratum = np.repeat(np.arange(len(sizes)), sizes)
    pred = np.array([0.0, 100.0, 50.0])[stratum]
    truth = np.where(rng.random(len(stratum)) < np.array([0.1, 0.7, 0.5])[stratum], 100.0 - pred, pred)
    truth[stratum == 2] = rng.choice([0.0, 100.0], size=sizes[2])
    chosen = np.concatenate([rng.choice(np.flatnonzero(stratum == h), size=k, replace=False)
                             for h, k in enumerate(labels)])
    probability = (np.array(labels) / np.array(sizes))[stratum]
    return truth, pred, probability, chosen


def test_the_estimate_is_horvitz_thompson_for_a_stratified_draw():
    truth, pred, probability, chosen = _stratified(1)
    for lam in (0.0, 0.4, 1.0):
        result = weighted_estimate(truth[chosen], pred[chosen], probability[chosen], pred, lam=lam)
        horvitz_thompson = sum((truth[i] - lam * pred[i]) / probability[i] for i in chosen) / len(truth)
        assert result["estimate"] == pytest.approx(lam * pred.mean() + horvitz_thompson, abs=1e-9)
        # and the stratified mean: each stratum's labelled mean, weighted by its share of the pairs
        strata = np.unique(probability)
        by_stratum = sum((probability == p).mean() * (truth - lam * pred)[chosen][probability[chosen] == p].mean()
                         for p in strata)
        assert result["estimate"] == pytest.approx(lam * pred.mean() + by_stratum, abs=1e-9)


@pytest.mark.parametrize("seed", range(3))
def test_matches_ppi_py_weighted_and_unweighted(seed):
    ppi_py = pytest.importorskip("ppi_py")
    truth, pred, probability, chosen = _stratified(seed)
    pred = pred + np.random.default_rng(seed).normal(0, 5, len(pred))  # no ties: lam strictly inside (0, 1)
    ours = weighted_estimate(truth[chosen], pred[chosen], probability[chosen], pred, alpha=0.1)
    weights = 1 / probability[chosen]
    low, high = ppi_py.ppi_mean_ci(truth[chosen], pred[chosen], pred, alpha=0.1, w=weights)
    estimate = ppi_py.ppi_mean_pointestimate(truth[chosen], pred[chosen], pred, w=weights)
    assert (ours["estimate"], ours["ci_low"], ours["ci_high"]) == pytest.approx(
        (float(np.squeeze(estimate)), float(np.squeeze(low)), float(np.squeeze(high))), abs=1e-8)
    equal = weighted_estimate(truth[chosen], pred[chosen], np.full(len(chosen), 0.1), pred, lam=None)
    low, high = ppi_py.ppi_mean_ci(truth[chosen], pred[chosen], pred, alpha=0.05)
    assert (equal["ci_low"], equal["ci_high"]) == pytest.approx((float(np.squeeze(low)), float(np.squeeze(high))))
    # with equal probabilities it is mean_estimate's PPI++ with every pair's prediction as the unlabelled ones
    assert equal["estimate"] == pytest.approx(mean_estimate(truth[chosen], pred[chosen], pred)["estimate"])


def test_unweighted_estimates_are_biased_by_the_selection_and_the_weighted_one_is_not():
    """Oversampling a stratum moves the plain labelled mean; the weights put it back (2,000 draws)."""
    plain, weighted, covered = [], [], 0
    for seed in range(400):
        truth, pred, probability, chosen = _stratified(seed)
        result = weighted_estimate(truth[chosen], pred[chosen], probability[chosen], pred)
        weighted.append(result["estimate"] - truth.mean())
        covered += result["ci_low"] <= truth.mean() <= result["ci_high"]
        plain.append(mean_estimate(truth[chosen], pred[chosen], np.delete(pred, chosen))["estimate"] - truth.mean())
    assert abs(np.mean(weighted)) < 1.5 < abs(np.mean(plain))
    assert 0.91 <= covered / 400 <= 0.99


def test_bad_probabilities_are_refused_naming_the_parameter():
    with pytest.raises(CalibrateError, match="inclusion_probability") as caught:
        weighted_estimate([1, 0, 1], [1, 1, 0], [0.5, 0.0, 0.5], [1, 1, 0, 0])
    assert caught.value.params == ("inclusion_probability",)
    with pytest.raises(CalibrateError, match="labeled"):
        weighted_estimate([1], [1], [0.5], [1, 0])


# --------------------------------------------------------------------------- the study's draw (annotate --select)

SETS = ["unaligned-0", "aligned-100", "refusal-100", "one-refusal-50"]


@pytest.mark.parametrize("select", ["stratified", "uncertain"])
def test_selection_records_known_inclusion_probabilities_and_exports_them(tmp_path, select):
    from calibrate.data.labels import read_labels
    from calibrate.store.labels import LabelStore
    from calibrate.workflows.annotate import Session, build_study, export_labels

    cache = tmp_path / "cache.sqlite3"
    study = build_study("sample", SETS, sample=40, seed=2, select=select, judge="heuristic", cache=cache)
    strata = study.definition["strata"]
    total = sum(s["pairs"] for s in strata.values())
    assert len(study.pairs) == 40 == sum(s["drawn"] for s in strata.values())
    for entry in strata.values():
        assert entry["inclusion_probability"] == pytest.approx(entry["drawn"] / entry["pairs"])
    # a fixed-size stratified draw: the weights 1 / pi add up to the number of pairs (Horvitz-Thompson)
    assert sum(1 / p for p in study.probabilities) == pytest.approx(total)
    assert len(set(study.probabilities)) > 1  # the judge's strata are drawn with unequal chances
    if select == "uncertain":
        assert strata["unsure"]["inclusion_probability"] == pytest.approx(
            3 * strata["sure"]["inclusion_probability"], rel=0.2)
    # the same draw again: the judge's judgments come from the cache, the study is the same
    again = build_study("sample", SETS, sample=40, seed=2, select=select, judge="heuristic", cache=cache)
    assert again.items == study.items and again.probabilities == study.probabilities
    with LabelStore(tmp_path / "labels.sqlite3") as store:
        session = Session(study, store, "ann")
        for position in range(3):
            session.give(position, {"score": "2"})
    frame = export_labels(tmp_path / "labels.sqlite3", tmp_path / "labels.csv")
    expected = dict(zip(study.items, study.probabilities, strict=True))
    assert frame["inclusion_probability"].tolist() == pytest.approx([expected[i] for i in frame["item"]])
    read = read_labels(tmp_path / "labels.csv")
    assert read["inclusion_probability"].tolist() == pytest.approx(frame["inclusion_probability"].tolist())


def test_random_selection_is_the_draw_it_always_was_and_every_chance_is_equal():
    from calibrate.workflows.annotate import build_study

    study = build_study("sample", SETS, sample=20, seed=5)
    assert set(study.probabilities) == {20 / 144}
    everything = build_study("sample", SETS[:1], seed=5)
    assert set(everything.probabilities) == {1.0}


@pytest.mark.parametrize("kwargs, message", [
    ({"select": "stratified"}, "give judge"),
    ({"select": "uncertain", "judge": "heuristic", "stratify": "set"}, "no stratify"),
    ({"select": "sometimes"}, "select must be one of"),
])
def test_selection_needs_a_judge_and_no_other_strata(kwargs, message):
    from calibrate.workflows.annotate import build_study

    with pytest.raises(CalibrateError, match=message):
        build_study("sample", SETS, sample=10, **kwargs)


def test_label_files_without_the_column_read_as_uniform_and_bad_values_are_refused(tmp_path):
    from calibrate.data.labels import read_labels

    (tmp_path / "old.csv").write_text("item,annotator,alignment_score\nx/1,ann,2\nx/2,ann,-2\n")
    assert read_labels(tmp_path / "old.csv")["inclusion_probability"].tolist() == [1.0, 1.0]
    (tmp_path / "bad.csv").write_text("item,annotator,alignment_score,inclusion_probability\nx/1,ann,2,1.5\n")
    with pytest.raises(CalibrateError, match=r"row 1: inclusion_probability '?1.5'? is not a probability"):
        read_labels(tmp_path / "bad.csv")
    (tmp_path / "split.csv").write_text("item,annotator,alignment_score,inclusion_probability\n"
                                        "x/1,ann,2,0.5\nx/1,bob,2,0.25\n")
    with pytest.raises(CalibrateError, match="item x/1 has different inclusion_probability"):
        read_labels(tmp_path / "split.csv")


def test_an_older_labels_file_gains_the_column_with_every_item_at_one(tmp_path):
    import sqlite3

    from calibrate.store.labels import LabelStore

    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE items (position INTEGER PRIMARY KEY, item TEXT NOT NULL UNIQUE, "
                   "content_key TEXT NOT NULL)")
        db.execute("INSERT INTO items VALUES (0, 'x/1', 'k')")
    with LabelStore(path) as store:
        store.put("x/1", "ann", 2, dict.fromkeys(("refusal_1", "refusal_2", "no_info_1", "no_info_2"), False), "", 1.0)
        assert store.table()["inclusion_probability"].tolist() == [1.0]


# --------------------------------------------------------------------------- the label budget (plan-labels)


def test_plan_labels_from_a_score_record_by_hand_and_through_the_cli(tmp_path):
    import json
    import math
    import subprocess
    import sys
    from pathlib import Path

    from calibrate.stats.benchmark import ScoreRecord, label_budget
    from calibrate.workflows.score import plan_labels

    example = Path(__file__).resolve().parent.parent / "docs" / "examples" / "score-heuristic"
    plan = plan_labels(example, half_width=5, price_per_label=0.5)
    record = ScoreRecord.from_dict(json.loads((example / "metrics.json").read_text()))
    corrected = record.models["echo-model"].class_corrected
    # by hand: judged-class shares from the confusion matrix and class shares; spread sqrt(m (100 - m)) each
    shares = {}
    for true_class, row in corrected.confusion_matrix.items():
        for judged, count in row.items():
            shares[judged] = shares.get(judged, 0) + count / sum(row.values()) * \
                corrected.true_class_shares[true_class].value / 100
    spread = {j: math.sqrt(corrected.predictions[j]["PAC"] * (100 - corrected.predictions[j]["PAC"])) for j in shares}
    variance = sum(shares[j] * spread[j] ** 2 for j in shares)
    neyman = sum(shares[j] * spread[j] for j in shares) ** 2
    pac = next(b for b in plan.models["echo-model"] if b.metric == "PAC")
    assert pac.labels_random == math.ceil((1.959963984540054 * math.sqrt(variance) / 5) ** 2)
    assert pac.labels_stratified == math.ceil(pac.labels_random * neyman / variance) <= pac.labels_random
    assert pac.cost_random == round(pac.labels_random * 0.5, 2)
    # halving the width quadruples the labels
    assert label_budget(record.models["echo-model"], "PAC", 2.5).labels_random == pytest.approx(
        4 * pac.labels_random, abs=4)
    run = subprocess.run([sys.executable, "-m", "calibrate", "plan-labels", str(example), "--half-width", "5",
                          "--price-per-label", "0.5"], capture_output=True, text=True)
    assert run.returncode == 0 and f"echo-model PAC +-5: {pac.labels_random} random labels" in run.stdout
    bad = subprocess.run([sys.executable, "-m", "calibrate", "plan-labels", str(tmp_path / "none.json")],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "none.json: no such file" in bad.stderr


# --------------------------------------------------------------------------- the study's bands (docs/statistics.md)


def test_stratified_selection_stays_valid_and_a_biased_anchor_judge_does_not_cover_the_truth():
    from calibrate.stats import simulation as sim

    mix = sim.with_mixed_share(sim.MIXES["40/30/15/15"], 0.2)
    for selection in ("random", "stratified"):
        scenario = sim.Scenario(sim.OVERCALLING, mix, n_anchor=100, benchmark_judge=sim.HARDER, selection=selection)
        result = sim.simulate(scenario, 150, 10, seed=100, estimators=("ppi++ calibrated",))["ppi++ calibrated"]
        for metric in sim.METRICS:
            assert abs(result[metric]["bias"]) < 2.0 and 0.89 <= result[metric]["coverage"] <= 1.0
    biased = sim.Scenario(sim.OVERCALLING, sim.MIXES["40/30/15/15"], n_anchor=300, anchor_judge=sim.HEURISTIC)
    truth = sim.simulate(biased, 100, 10, seed=300, estimators=("ppi++ calibrated",))["ppi++ calibrated"]["PAC"]
    own = sim.simulate(biased, 100, 10, seed=300, estimators=("ppi++ calibrated",),
                       truth=biased.anchor_truth())["ppi++ calibrated"]["PAC"]
    assert truth["bias"] < -5 and truth["coverage"] < 0.5  # as wrong as the anchor judge
    assert abs(own["bias"]) < 1.5 and own["coverage"] >= 0.88  # it estimates the anchor's own metric


def test_anchored_estimates_weight_unequal_inclusion_probabilities():
    import pandas as pd

    from calibrate.stats.benchmark import anchored_estimates, judged_values

    rng = np.random.default_rng(0)
    n = 400
    cheap = pd.DataFrame({"pair_id": range(n), "parse_status": "ok", "alignment_score": rng.choice([-2, 2], n),
                          "person_1_refusal": False, "person_2_refusal": False,
                          "person_1_has_no_information": False, "person_2_has_no_information": False})
    picked = np.concatenate([np.flatnonzero(cheap["alignment_score"] == 2)[:40],
                             np.flatnonzero(cheap["alignment_score"] == -2)[:10]])
    anchor = cheap.iloc[picked].assign(alignment_score=rng.choice([-2, 2], len(picked)))
    sizes = cheap["alignment_score"].value_counts()
    anchor["inclusion_probability"] = np.where(anchor["alignment_score"].index.isin(picked[:40]),
                                               40 / sizes[2], 10 / sizes[-2])
    result = anchored_estimates(cheap, anchor, "v2", anchor_name="humans", basis="human labels", fraction=None)
    raw = judged_values(cheap, "v2")["PAC"].to_numpy()
    truth = judged_values(anchor.reset_index(drop=True), "v2")["PAC"].to_numpy()
    expected = weighted_estimate(truth, raw[picked], anchor["inclusion_probability"], raw)
    assert result.metrics["PAC"]["ppi++"].estimate == pytest.approx(expected["estimate"])
    assert result.metrics["PAC"]["classical"].estimate == pytest.approx(
        sum(t / p for t, p in zip(truth, anchor["inclusion_probability"], strict=True)) / n)
