"""calibrate.ppi: prediction-powered means against ppi_py, by hand, by simulation, and from tables."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from calibrate.data.tables import read_prediction_table
from calibrate.errors import CalibrateError
from calibrate.stats.ppi import METHODS, estimate_table, mean_estimate
from tests.inprocess import cli

TOLERANCE = 1e-6


# --------------------------------------------------------------------------- synthetic tables


def _gaussian(seed: int, n: int, big_n: int, slope: float, bias: float, noise: float):
    """Truth ~ N(0.3, 1); prediction = slope * truth + bias + noise (biased, maybe mis-scaled)."""
    rng = np.random.default_rng(seed)
    truth = rng.normal(0.3, 1.0, n + big_n)
    pred = slope * truth + bias + rng.normal(0, noise, n + big_n)
    return truth[:n], pred[:n], pred[n:]


def _refusals(seed: int, n: int, big_n: int):
    """0/1 refusal flags; the cheap judge misses 20% of refusals and flags 10% of the rest."""
    rng = np.random.default_rng(seed)
    truth = (rng.random(n + big_n) < 0.3).astype(float)
    flip = rng.random(n + big_n)
    pred = np.where(truth == 1, flip > 0.2, flip < 0.1).astype(float)
    return truth[:n], pred[:n], pred[n:]


def _pac(seed: int, n: int, big_n: int):
    """PAC-like 0..100 values; the cheap judge reads 8 points high and noisy, clipped to 0..100."""
    rng = np.random.default_rng(seed)
    truth = np.clip(np.round(rng.normal(55, 20, n + big_n)), 0, 100)
    pred = np.clip(np.round(truth + 8 + rng.normal(0, 12, n + big_n)), 0, 100)
    return truth[:n], pred[:n], pred[n:]


def _useless(seed: int, n: int, big_n: int):
    """Predictions independent of the truth."""
    rng = np.random.default_rng(seed)
    return rng.normal(1, 1, n), rng.normal(0, 1, n), rng.normal(0, 1, big_n)


CASES = {
    "small-biased": lambda: _gaussian(1, 12, 150, 1.0, 0.5, 0.4),
    "large-misscaled": lambda: _gaussian(2, 400, 6000, 0.7, 1.0, 0.5),
    "shrunk-clip-at-1": lambda: _gaussian(3, 60, 600, 0.4, 0.0, 0.05),  # tuned lam > 1 before clipping
    "anticorrelated-clip-at-0": lambda: _gaussian(4, 50, 500, -1.0, 0.0, 0.3),  # tuned lam < 0
    "refusal-flags": lambda: _refusals(5, 80, 2000),
    "refusal-flags-few": lambda: _refusals(6, 15, 300),
    "pac-0-100": lambda: _pac(7, 60, 1500),
    "pac-0-100-large": lambda: _pac(8, 500, 800),
    "useless": lambda: _useless(9, 40, 400),
}


def _reference(ppi_py, method: str, truth, pred, unlabeled, alpha: float) -> tuple[float, float, float]:
    """(estimate, low, high) from ppi_py; its default alpha is 0.1, so alpha is always passed."""
    if method == "classical":
        low, high = ppi_py.classical_mean_ci(truth, alpha=alpha)
        return float(np.mean(truth)), float(np.squeeze(low)), float(np.squeeze(high))
    lam = 1 if method == "ppi" else None  # None = ppi_py's power tuning (PPI++)
    estimate = ppi_py.ppi_mean_pointestimate(truth, pred, unlabeled, lam=lam)
    low, high = ppi_py.ppi_mean_ci(truth, pred, unlabeled, alpha=alpha, lam=lam)
    return float(np.squeeze(estimate)), float(np.squeeze(low)), float(np.squeeze(high))


@pytest.mark.parametrize("alpha", [0.05, 0.1])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_ppi_py(case, method, alpha):
    ppi_py = pytest.importorskip("ppi_py")
    truth, pred, unlabeled = CASES[case]()
    ours = mean_estimate(truth, pred, unlabeled, method=method, alpha=alpha)
    estimate, low, high = _reference(ppi_py, method, truth, pred, unlabeled, alpha)
    assert ours["estimate"] == pytest.approx(estimate, abs=TOLERANCE, rel=0)
    assert ours["ci_low"] == pytest.approx(low, abs=TOLERANCE, rel=0)
    assert ours["ci_high"] == pytest.approx(high, abs=TOLERANCE, rel=0)
    assert ours["ci_low"] < ours["estimate"] < ours["ci_high"]
    assert (ours["n_labeled"], ours["n_unlabeled"], ours["alpha"]) == (len(truth), len(unlabeled), alpha)


@pytest.mark.parametrize("case", sorted(CASES))
def test_tuned_lambda_matches_ppi_py(case):
    """The lam we report is the one ppi_py tunes for the mean (identity Hessian, clip=True)."""
    ppi_py = pytest.importorskip("ppi_py")
    calc_lam = getattr(ppi_py.ppi, "_calc_lam_glm", None)
    if calc_lam is None:
        pytest.skip("ppi_py no longer exposes _calc_lam_glm")
    truth, pred, unlabeled = CASES[case]()
    center = np.mean(unlabeled) + np.mean(truth - pred)
    expected = calc_lam((truth - center)[:, None], (pred - center)[:, None], (unlabeled - center)[:, None],
                        np.eye(1), clip=True)
    assert mean_estimate(truth, pred, unlabeled, "ppi++")["lam"] == pytest.approx(expected, abs=1e-12)


def test_clipping_cases_hit_the_bounds():
    """The two clipping cases in CASES really exercise the clip (else they test nothing extra)."""
    assert mean_estimate(*CASES["shrunk-clip-at-1"](), "ppi++")["lam"] == 1.0
    assert mean_estimate(*CASES["anticorrelated-clip-at-0"](), "ppi++")["lam"] == 0.0
    assert mean_estimate(*CASES["refusal-flags"](), "ppi++")["lam"] not in (0.0, 1.0)


# --------------------------------------------------------------------------- by hand


def test_hand_computed_tiny_case():
    truth, pred, unlabeled = [2, 4, 6, 8], [3, 4, 7, 10], [1, 5, 9, 5]
    z = norm.ppf(0.975)
    # PPI: mean(unlabeled) + mean(truth - pred) = 5 + (-1) = 4;
    # se^2 = var0(unlabeled)/N + var0(truth - pred)/n = 8/4 + 0.5/4 = 2.125.
    ppi = mean_estimate(truth, pred, unlabeled, "ppi")
    assert ppi["estimate"] == pytest.approx(4.0, abs=1e-12)
    assert ppi["lam"] == 1.0
    assert (ppi["ci_low"], ppi["ci_high"]) == pytest.approx((4 - z * math.sqrt(2.125), 4 + z * math.sqrt(2.125)))
    # PPI++: cov0(truth, pred) = 24/4 = 6; var1(all 8 preds) = 64/7; lam = 6 / ((1 + 4/4) * 64/7) = 21/64.
    tuned = mean_estimate(truth, pred, unlabeled, "ppi++")
    assert tuned["lam"] == pytest.approx(21 / 64, abs=1e-12)
    assert tuned["estimate"] == pytest.approx(21 / 64 * 5 + 5 - 21 / 64 * 6, abs=1e-12)
    # Classical: mean 5, se = sqrt(var0 = 5) / 2.
    classical = mean_estimate(truth, pred, unlabeled, "classical")
    assert (classical["estimate"], classical["lam"]) == (5.0, None)
    assert classical["ci_high"] - 5 == pytest.approx(z * math.sqrt(5) / 2)


def test_result_is_plain_json():
    result = mean_estimate(*CASES["refusal-flags"](), "ppi++")
    assert set(result) == {"method", "estimate", "ci_low", "ci_high", "n_labeled", "n_unlabeled", "alpha", "lam"}
    assert all(type(result[k]) is float for k in ("estimate", "ci_low", "ci_high", "alpha", "lam"))
    assert all(type(result[k]) is int for k in ("n_labeled", "n_unlabeled"))
    assert json.loads(json.dumps(result, allow_nan=False)) == result


def test_constant_predictions_fall_back_to_classical():
    """ppi_py's tuned lam is 0/0 here; ours is 0, i.e. exactly the classical interval."""
    truth = [0.0, 1.0, 1.0, 0.0, 1.0]
    tuned = mean_estimate(truth, [1.0] * 5, [1.0] * 20, "ppi++")
    classical = mean_estimate(truth, [1.0] * 5, [1.0] * 20, "classical")
    assert tuned["lam"] == 0.0
    assert (tuned["estimate"], tuned["ci_low"], tuned["ci_high"]) == pytest.approx(
        (classical["estimate"], classical["ci_low"], classical["ci_high"]))


def test_booleans_count_as_zero_and_one():
    as_bools = mean_estimate([True, False, True], [True, True, False], [False, True], "ppi")
    as_numbers = mean_estimate([1, 0, 1], [1, 1, 0], [0, 1], "ppi")
    assert as_bools == as_numbers


# --------------------------------------------------------------------------- efficiency and coverage


def _width(result: dict) -> float:
    return result["ci_high"] - result["ci_low"]


@pytest.mark.parametrize("seed", range(5))
def test_good_predictions_narrow_the_interval(seed):
    truth, pred, unlabeled = _gaussian(100 + seed, 100, 5000, 1.0, 0.4, 0.3)
    classical, ppi, tuned = (mean_estimate(truth, pred, unlabeled, m) for m in ("classical", "ppi", "ppi++"))
    assert _width(tuned) < 0.6 * _width(classical)
    assert _width(tuned) <= 1.02 * _width(ppi)
    assert tuned["lam"] > 0.8


@pytest.mark.parametrize("seed", range(5))
def test_useless_predictions_fall_back_to_classical(seed):
    truth, pred, unlabeled = _useless(200 + seed, 2000, 20000)
    classical, ppi, tuned = (mean_estimate(truth, pred, unlabeled, m) for m in ("classical", "ppi", "ppi++"))
    assert tuned["lam"] < 0.1
    assert _width(tuned) == pytest.approx(_width(classical), rel=0.02)
    assert _width(ppi) > 1.3 * _width(classical)  # plain PPI pays for the useless predictions


@pytest.mark.parametrize("kind", ["gaussian", "refusal"])
def test_coverage_near_nominal_where_the_naive_mean_fails(kind):
    """400 seeded replicates: PPI and PPI++ cover the truth mean ~95% although the predictions are
    biased (their own mean misses it entirely)."""
    rng = np.random.default_rng(42)
    n, big_n, reps = 100, 1000, 400
    hits = {"ppi": 0, "ppi++": 0, "classical": 0}
    naive_hits = 0
    for _ in range(reps):
        if kind == "gaussian":
            truth_all = rng.normal(0.3, 1.0, n + big_n)
            pred_all = truth_all + 0.5 + rng.normal(0, 0.5, n + big_n)
            true_mean = 0.3
        else:
            truth_all = (rng.random(n + big_n) < 0.3).astype(float)
            flip = rng.random(n + big_n)  # over-flags: misses 10% of refusals, flags 20% of the rest
            pred_all = np.where(truth_all == 1, flip > 0.1, flip < 0.2).astype(float)  # mean 0.41
            true_mean = 0.3
        for method in hits:
            result = mean_estimate(truth_all[:n], pred_all[:n], pred_all[n:], method)
            hits[method] += result["ci_low"] <= true_mean <= result["ci_high"]
        naive = pred_all.mean()
        naive_hits += abs(naive - true_mean) < 1.96 * pred_all.std() / math.sqrt(n + big_n)
    for method, count in hits.items():
        assert 0.91 <= count / reps <= 0.985, (method, count)
    assert naive_hits / reps < 0.2


# --------------------------------------------------------------------------- input checks


@pytest.mark.parametrize("args, kwargs, message", [
    (([], [], [1.0]), {}, "at least 2 labeled rows"),
    (([1.0], [1.0], [1.0]), {}, "at least 2 labeled rows"),
    (([1.0, 2.0], [1.0], [1.0]), {}, "differ in length"),
    (([1.0, float("nan")], [1.0, 2.0], [1.0]), {}, "labeled_truth has a non-finite value at position 1"),
    (([1.0, 2.0], [1.0, math.inf], [1.0]), {}, "labeled_pred has a non-finite value"),
    (([1.0, 2.0], [1.0, 2.0], [1.0, None]), {}, "unlabeled_pred has a non-finite value"),
    (([1.0, 2.0], ["a", "b"], [1.0]), {}, "labeled_pred must hold numbers"),
    (([1.0, 2.0], [1.0, 2.0], [1.0]), {"method": "ppi+"}, "unknown method 'ppi+'"),
    (([1.0, 2.0], [1.0, 2.0], [1.0]), {"alpha": 0}, "alpha must be a number in (0, 1)"),
    (([1.0, 2.0], [1.0, 2.0], [1.0]), {"alpha": 1.0}, "alpha must be a number in (0, 1)"),
    (([1.0, 2.0], [1.0, 2.0], [1.0]), {"alpha": float("nan")}, "alpha must be a number in (0, 1)"),
    (([1.0, 2.0], [1.0, 2.0], []), {"method": "ppi"}, "method 'ppi' needs unlabeled predictions"),
    (([1.0, 2.0], [1.0, 2.0], None), {"method": "ppi++"}, "method 'ppi++' needs unlabeled predictions"),
])
def test_input_errors(args, kwargs, message):
    with pytest.raises(CalibrateError) as caught:
        mean_estimate(*args, **kwargs)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_classical_needs_no_unlabeled_rows():
    for unlabeled in ([], None):
        result = mean_estimate([1.0, 2.0, 3.0], [0.0, 0.0, 0.0], unlabeled, "classical")
        assert (result["estimate"], result["n_unlabeled"]) == (2.0, 0)


# --------------------------------------------------------------------------- tables


def _table_rows():
    truth, pred, unlabeled = CASES["pac-0-100"]()
    rows = [{"id": i, "anchor": t, "cheap": p} for i, (t, p) in enumerate(zip(truth, pred, strict=True))]
    rows += [{"id": len(rows) + i, "anchor": None, "cheap": p} for i, p in enumerate(unlabeled)]
    order = np.random.default_rng(0).permutation(len(rows))  # labelled rows scattered through the table
    return [rows[i] for i in order], (truth, pred, unlabeled)


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
def test_estimate_table_matches_mean_estimate(tmp_path, suffix):
    rows, (truth, pred, unlabeled) = _table_rows()
    frame = pd.DataFrame(rows)
    path = tmp_path / f"pairs{suffix}"
    if suffix == ".csv":
        frame.to_csv(path, index=False)  # None is written as an empty cell
    elif suffix == ".parquet":
        frame.to_parquet(path, index=False)  # None becomes NaN in a float column
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    for method in METHODS:
        got = estimate_file(path, "anchor", "cheap", method=method, alpha=0.1)
        want = mean_estimate(truth, pred, unlabeled, method=method, alpha=0.1)
        assert got["n_labeled"] == want["n_labeled"] == 60
        assert got["n_unlabeled"] == want["n_unlabeled"] == 1500
        # Same values in another row order: equal up to summation-order rounding.
        for key in ("estimate", "ci_low", "ci_high"):
            assert got[key] == pytest.approx(want[key], abs=1e-9)
        assert got["lam"] == (pytest.approx(want["lam"], abs=1e-12) if want["lam"] is not None else None)


def test_estimate_table_csv_booleans_and_blanks(tmp_path):
    path = tmp_path / "refusals.csv"
    path.write_text("id,anchor_refused,cheap_refused\n"
                    "1,true,true\n2,false,TRUE\n3,,false\n4, ,true\n5,1,False\n6,0,0\n7,,1\n")
    result = estimate_file(path, "anchor_refused", "cheap_refused", method="ppi")
    expected = mean_estimate([1, 0, 1, 0], [1, 1, 0, 0], [0, 1, 1], method="ppi")
    assert result == expected
    assert (result["n_labeled"], result["n_unlabeled"]) == (4, 3)


def test_estimate_table_parquet_booleans_with_nulls(tmp_path):
    path = tmp_path / "refusals.parquet"
    pd.DataFrame({
        "anchor": pd.array([True, None, False, True, None, False], dtype="boolean"),
        "cheap": [True, False, False, True, True, True],
    }).to_parquet(path)
    result = estimate_file(path, "anchor", "cheap", method="ppi++", alpha=0.1)
    assert result == mean_estimate([1, 0, 1, 0], [1, 0, 1, 1], [0, 1], method="ppi++", alpha=0.1)


def estimate_file(path, truth: str, pred: str, **kwargs) -> dict:
    """What `calibrate estimate` does: the table read (data layer), then the estimate (stats)."""
    return estimate_table(read_prediction_table(path, truth, pred), **kwargs)


def _write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("name, text, kwargs, message", [
    ("absent.csv", None, {}, "cannot read"),
    ("table.txt", "t,p\n1,1\n", {}, "unsupported file type"),
    ("broken.parquet", "not a parquet file", {}, "cannot read"),
    ("broken.jsonl", '{"t": 1, "p": 1}\n{"t": \n', {}, "line 2 is not JSON"),
    ("cols.csv", "truth,p\n1,1\n", {}, "missing column 't'"),
    ("cols2.csv", "t,pred\n1,1\n", {}, "missing column 'p'"),
    ("text.csv", "t,p\n1,1\n0,1\nyes,0\n,1\n", {}, "row 3: column 't': 'yes' is not a number"),
    ("textpred.csv", "t,p\n1,1\n0,abc\n,1\n", {}, "row 2: column 'p': 'abc' is not a number"),
    ("nan.csv", "t,p\n1,1\n0,nan\n,1\n", {}, "row 2: column 'p': 'nan' is not a finite number"),
    ("nopred.csv", "t,p\n1,1\n0,1\n,\n", {}, "row 3: column 'p' is empty"),
    ("unlabelled.csv", "t,p\n,1\n,0\n1,1\n", {}, "at least 2 rows with a value in column 't', found 1"),
    ("alllabelled.csv", "t,p\n1,1\n0,0\n", {}, "method 'ppi++' needs unlabelled rows"),
    ("json.jsonl", '{"t": 1, "p": [1]}\n{"t": 0, "p": 1}\n', {}, "row 1: column 'p': expected a number"),
])
def test_estimate_table_errors_name_the_file(tmp_path, name, text, kwargs, message):
    path = tmp_path / name if text is None else _write(tmp_path, name, text)
    with pytest.raises(CalibrateError) as caught:
        estimate_file(path, "t", "p", **kwargs)
    assert message in str(caught.value)
    assert str(path) in str(caught.value)
    assert "\n" not in str(caught.value)


def test_estimate_table_all_labelled_is_fine_for_classical(tmp_path):
    path = _write(tmp_path, "all.csv", "t,p\n1,1\n0,0\n1,0\n")
    result = estimate_file(path, "t", "p", method="classical")
    assert (result["estimate"], result["n_labeled"], result["n_unlabeled"]) == (pytest.approx(2 / 3), 3, 0)


def test_estimate_table_checks_method_and_alpha_naming_them(tmp_path):
    table = read_prediction_table(_write(tmp_path, "t.csv", "t,p\n1,1\n0,0\n,1\n"), "t", "p")
    with pytest.raises(CalibrateError, match="unknown method") as caught:
        estimate_table(table, method="bogus")
    assert caught.value.params == ("method",)
    with pytest.raises(CalibrateError, match="alpha") as caught:
        estimate_table(table, alpha=5)
    assert caught.value.params == ("alpha",)


def test_estimate_command_prints_the_json_and_fails_in_one_line(tmp_path):
    """Through the CLI, against ppi_py on the same table."""
    ppi_py = pytest.importorskip("ppi_py")
    rng = np.random.default_rng(5)
    truth = rng.normal(50, 20, 300)
    pred = truth + rng.normal(5, 8, 300)
    labelled = np.arange(300) < 60
    table = pd.DataFrame({"anchor": np.where(labelled, truth, np.nan), "cheap": pred})
    table.to_csv(tmp_path / "t.csv", index=False)
    run = cli("estimate", "--data", str(tmp_path / "t.csv"), "--truth", "anchor", "--pred", "cheap", check=True)
    report = json.loads(run.stdout)
    low, high = ppi_py.ppi_mean_ci(truth[labelled], pred[labelled], pred[~labelled], alpha=0.05)
    assert report["method"] == "ppi++" and (report["n_labeled"], report["n_unlabeled"]) == (60, 240)
    assert report["estimate"] == pytest.approx(float(ppi_py.ppi_mean_pointestimate(
        truth[labelled], pred[labelled], pred[~labelled])[0]), abs=1e-6)
    assert (report["ci_low"], report["ci_high"]) == pytest.approx((float(low[0]), float(high[0])), abs=1e-6)
    failed = cli("estimate", "--data", str(tmp_path / "t.csv"), "--truth", "nope", "--pred", "cheap")
    assert failed.returncode == 2 and failed.stderr.count("\n") == 1 and "t.csv" in failed.stderr
