"""Agreement statistics against published examples and values worked out here from the formulas."""

from __future__ import annotations

import json
import math
import re
from fractions import Fraction
from pathlib import Path

import krippendorff
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score
from statsmodels.stats.inter_rater import aggregate_raters
from statsmodels.stats.inter_rater import fleiss_kappa as statsmodels_fleiss_kappa

from calibrate.data.tables import load_ratings
from calibrate.errors import CalibrateError
from calibrate.stats.agreement import (
    AgreementReport,
    agreement_report,
    fleiss_kappa,
    krippendorff_alpha,
    pairwise_kappas,
    percentile_bounds,
    versus_truth,
)
from tests.inprocess import cli

SCALE = [-2, -1, 0, 1, 2]
nan = np.nan

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", example C: 4 observers (rows)
# x 12 units (columns), nan = not coded. Published: nominal .743, ordinal .815, interval .849.
KRIPPENDORFF_OBSERVERS_BY_UNITS = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, nan, nan, nan],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, nan, 3],
    [nan, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, nan],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, nan],
]
KRIPPENDORFF_PUBLISHED = {"nominal": 0.743, "ordinal": 0.815, "interval": 0.849}

# Fleiss (1971) as reproduced on Wikipedia's "Fleiss' kappa" page: 10 subjects x 5 categories,
# each cell the number of the 14 raters who chose that category. Published kappa 0.210.
FLEISS_COUNTS = [
    [0, 0, 0, 0, 14],
    [0, 2, 6, 4, 2],
    [0, 0, 3, 5, 6],
    [0, 3, 9, 2, 0],
    [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0],
    [3, 2, 6, 3, 0],
    [2, 5, 3, 2, 2],
    [6, 5, 2, 1, 0],
    [0, 2, 2, 3, 7],
]


def krippendorff_items_by_raters() -> pd.DataFrame:
    """Example C the way calibrate holds ratings: one row per unit, one column per observer."""
    frame = pd.DataFrame(np.array(KRIPPENDORFF_OBSERVERS_BY_UNITS, dtype=float).T, columns=["A", "B", "C", "D"])
    frame.index = pd.Index(range(1, 13), name="item")
    return frame


def alpha_from_coincidences(rows: list[list[float]], level: str) -> Fraction:
    """Krippendorff's alpha in exact arithmetic from the coincidence matrix (Krippendorff 2011).

    rows are units, each a list of the values coders gave (nan = not coded). Every ordered pair of
    values from different coders of a unit with m values adds 1/(m-1) to o[c, k];
    alpha = 1 - (n - 1) * sum o[c,k] d2(c,k) / sum n_c n_k d2(c,k).
    """
    units = [[int(v) for v in row if not math.isnan(v)] for row in rows]
    values = sorted({v for unit in units for v in unit})
    o = {(c, k): Fraction(0) for c in values for k in values}
    for unit in units:
        m = len(unit)
        if m < 2:
            continue
        for i, c in enumerate(unit):
            for j, k in enumerate(unit):
                if i != j:
                    o[c, k] += Fraction(1, m - 1)
    n_c = {c: sum(o[c, k] for k in values) for c in values}
    n = sum(n_c.values())

    def d2(c: int, k: int) -> Fraction:
        if level == "nominal":
            return Fraction(int(c != k))
        if level == "interval":
            return Fraction((c - k) ** 2)
        low, high = min(c, k), max(c, k)  # ordinal: marginals between c and k, ends counted half
        return (sum(n_c[g] for g in values if low <= g <= high) - (n_c[c] + n_c[k]) / 2) ** 2

    observed = sum(o[c, k] * d2(c, k) for c in values for k in values)
    expected = sum(n_c[c] * n_c[k] * d2(c, k) for c in values for k in values)
    return 1 - (n - 1) * observed / expected


def synthetic_table(seed: int = 7, n_items: int = 60, n_raters: int = 4) -> pd.DataFrame:
    """Correlated 5-point ratings: an item's latent score plus rater noise, 10% of cells missing."""
    rng = np.random.default_rng(seed)
    latent = rng.integers(-2, 3, n_items)
    table = np.clip(latent[:, None] + rng.integers(-1, 2, (n_items, n_raters)), -2, 2).astype(float)
    table[rng.random(table.shape) < 0.10] = np.nan
    return pd.DataFrame(table, columns=[f"judge_{k}" for k in range(n_raters)])


# --------------------------------------------------------------------------- Krippendorff


@pytest.mark.parametrize("level", ["nominal", "ordinal", "interval"])
def test_krippendorff_published_example(level):
    ratings = krippendorff_items_by_raters()
    alpha = krippendorff_alpha(ratings, level, labels=[1, 2, 3, 4, 5])
    assert round(alpha, 3) == KRIPPENDORFF_PUBLISHED[level]
    reference = alpha_from_coincidences(ratings.to_numpy().tolist(), level)
    assert alpha == pytest.approx(float(reference), abs=1e-6)


def test_krippendorff_reference_is_itself_the_published_value():
    # Guards the hand-written reference: it must land on the paper's numbers, independently.
    rows = krippendorff_items_by_raters().to_numpy().tolist()
    assert alpha_from_coincidences(rows, "nominal") == pytest.approx(0.743, abs=5e-4)
    assert alpha_from_coincidences(rows, "interval") == pytest.approx(0.849, abs=5e-4)
    assert alpha_from_coincidences(rows, "ordinal") == pytest.approx(0.815, abs=5e-4)


def test_krippendorff_orientation_pitfall():
    ratings = krippendorff_items_by_raters()
    # The package reads rows as raters: handing it our items x raters array unchanged is wrong ...
    wrong = krippendorff.alpha(reliability_data=ratings.to_numpy(), level_of_measurement="interval")
    assert abs(wrong - 0.849) > 0.1
    # ... and so is feeding the module the transposed table (raters as items).
    transposed = krippendorff_alpha(ratings.T.reset_index(drop=True), "interval", labels=[1, 2, 3, 4, 5])
    assert abs(transposed - 0.849) > 0.1
    assert round(krippendorff_alpha(ratings, "interval", labels=[1, 2, 3, 4, 5]), 3) == 0.849


@pytest.mark.parametrize("level", ["nominal", "ordinal", "interval"])
def test_krippendorff_synthetic_matches_reference(level):
    ratings = synthetic_table()
    reference = alpha_from_coincidences(ratings.to_numpy().tolist(), level)
    assert krippendorff_alpha(ratings, level, SCALE) == pytest.approx(float(reference), abs=1e-6)


def test_krippendorff_undefined_is_none():
    constant = pd.DataFrame({"a": [1.0, 1.0, 1.0], "b": [1.0, 1.0, 1.0]})
    assert krippendorff_alpha(constant, "ordinal", SCALE) is None  # no variation: 0/0 in the package
    assert krippendorff_alpha(constant, "nominal") is None  # one-value domain: the package raises
    disjoint = pd.DataFrame({"a": [1.0, nan, 2.0], "b": [nan, 2.0, nan]})
    assert krippendorff_alpha(disjoint, "interval", SCALE) is None  # no item rated twice


# --------------------------------------------------------------------------- Fleiss


def test_fleiss_published_example():
    counts = [[Fraction(x) for x in row] for row in FLEISS_COUNTS]
    raters, subjects = 14, len(counts)
    p_j = [sum(row[j] for row in counts) / (subjects * raters) for j in range(5)]
    p_i = [(sum(x * x for x in row) - raters) / (raters * (raters - 1)) for row in counts]
    p_bar, p_e = sum(p_i) / subjects, sum(p * p for p in p_j)
    assert round(float(p_bar), 3) == 0.378 and round(float(p_e), 3) == 0.213  # Wikipedia's figures
    expected = (p_bar - p_e) / (1 - p_e)
    assert round(float(expected), 3) == 0.210

    # Raw items x raters labels from the counts: category j repeated n_ij times across the 14 raters.
    raw = [[j + 1 for j, n in enumerate(row) for _ in range(n)] for row in FLEISS_COUNTS]
    ratings = pd.DataFrame(raw, columns=[f"r{k}" for k in range(raters)])
    kappa, n_items = fleiss_kappa(ratings)
    assert n_items == 10
    assert kappa == pytest.approx(float(expected), abs=1e-6)


# --------------------------------------------------------------------------- pairwise Cohen's kappa


def test_pairwise_kappas_match_sklearn_on_overlapping_items():
    ratings = synthetic_table()
    pairs = pairwise_kappas(ratings, SCALE)
    columns = list(ratings.columns)
    assert [(p.a, p.b) for p in pairs] == [(a, b) for i, a in enumerate(columns) for b in columns[i + 1:]]
    for pair in pairs:
        both = ratings[[pair.a, pair.b]].dropna()
        assert pair.n == len(both) < len(ratings)
        for key, weights in [("cohen_kappa", None), ("cohen_kappa_linear", "linear"),
                             ("cohen_kappa_quadratic", "quadratic")]:
            direct = cohen_kappa_score(both[pair.a], both[pair.b], labels=SCALE, weights=weights)
            assert getattr(pair, key) == pytest.approx(direct, abs=1e-6)
            assert 0 < getattr(pair, key) < 1  # correlated raters: a real, non-trivial agreement


def test_label_set_pitfall_uses_the_full_scale():
    # Two raters who never use 0: with only their own labels (-2, -1, 1, 2), sklearn puts -1 and 1
    # next to each other, so quadratic weights shrink. The module must use the full scale.
    a = [-2, -1, 1, 2, -1, 1, 2, -2, 1, -1]
    b = [-1, 1, 1, 2, -2, -1, 2, -1, 2, -1]
    full = cohen_kappa_score(a, b, labels=SCALE, weights="quadratic")
    observed_only = cohen_kappa_score(a, b, weights="quadratic")
    assert abs(full - observed_only) > 0.01
    [pair] = pairwise_kappas(pd.DataFrame({"a": a, "b": b}, dtype=float), SCALE)
    assert pair.cohen_kappa_quadratic == pytest.approx(full, abs=1e-9)

    # Never using only the ends (-2, +2) leaves -1, 0, 1 evenly spaced: weights by position are
    # shift-invariant, so there the label list happens not to matter.
    c, d = [-1, 0, 1, 0, 1, -1, 0], [0, 0, 1, -1, 1, -1, 1]
    assert cohen_kappa_score(c, d, labels=SCALE, weights="quadratic") == pytest.approx(
        cohen_kappa_score(c, d, weights="quadratic"))


def test_non_numeric_labels_have_no_weighted_kappa():
    ratings = pd.DataFrame({"a": ["yes", "no", "yes", "no"], "b": ["yes", "no", "no", "no"]}, dtype=object)
    [pair] = pairwise_kappas(ratings, ["no", "yes"])
    assert pair.cohen_kappa == pytest.approx(0.5)  # po = 3/4, pe = 1/2
    assert pair.cohen_kappa_linear is None and pair.cohen_kappa_quadratic is None


def test_degenerate_pairs_give_none_not_nan():
    ratings = pd.DataFrame({"a": [0.0, 0.0, 0.0, 1.0], "b": [0.0, 0.0, 0.0, nan], "c": [1.0, nan, nan, nan]})
    by_pair = {(p.a, p.b): p for p in pairwise_kappas(ratings, SCALE)}
    # a and b both constant on the same label over their 3 shared items: sklearn returns nan.
    assert by_pair["a", "b"].n == 3
    assert by_pair["a", "b"].cohen_kappa is None and by_pair["a", "b"].cohen_kappa_quadratic is None
    assert by_pair["a", "c"].n == 1 and by_pair["a", "c"].cohen_kappa is None  # n < 2


def test_rating_outside_labels_is_an_error():
    with pytest.raises(CalibrateError, match=r"column 'b', item 1: rating 3 is not one of the labels"):
        pairwise_kappas(pd.DataFrame({"a": [0.0, 1.0], "b": [0.0, 3.0]}), SCALE)


# --------------------------------------------------------------------------- Fleiss and missing values


def test_fleiss_matches_statsmodels_on_complete_items():
    ratings = synthetic_table()
    complete = ratings.dropna()
    assert 0 < len(complete) < len(ratings)
    direct = statsmodels_fleiss_kappa(aggregate_raters(complete.to_numpy())[0], method="fleiss")
    kappa, n_items = fleiss_kappa(ratings)
    assert n_items == len(complete)
    assert kappa == pytest.approx(direct, abs=1e-6)


def missing_table() -> pd.DataFrame:
    return pd.DataFrame(
        {"a": [0, 1, 2, nan, -1, 0], "b": [0, 1, nan, nan, -1, 1], "c": [0, 2, 2, 1, nan, 0], "d": [nan] * 6},
        index=pd.Index([f"p{k}" for k in range(1, 7)], name="item"), dtype=float,
    )


def test_missing_values():
    ratings = missing_table()
    counts = {(p.a, p.b): p.n for p in pairwise_kappas(ratings, SCALE)}
    assert counts == {("a", "b"): 4, ("a", "c"): 4, ("a", "d"): 0, ("b", "c"): 3, ("b", "d"): 0, ("c", "d"): 0}
    absent = next(p for p in pairwise_kappas(ratings, SCALE) if p.b == "d")
    assert absent.cohen_kappa is absent.cohen_kappa_linear is absent.cohen_kappa_quadratic is None

    # Fleiss sees only items every rater rated: none while d rated nothing; p1, p2, p6 without d.
    assert fleiss_kappa(ratings) == (None, 0)
    without_d = ratings.drop(columns="d")
    kappa, n_items = fleiss_kappa(without_d)
    assert n_items == 3
    rows = without_d.loc[["p1", "p2", "p6"]].to_numpy()
    assert kappa == pytest.approx(statsmodels_fleiss_kappa(aggregate_raters(rows)[0]), abs=1e-12)

    # Alpha pairs values within an item: an item rated once (p4) and a rater who rated nothing add
    # no pairs, so dropping them changes nothing.
    alpha = krippendorff_alpha(ratings, "ordinal", SCALE)
    assert alpha == pytest.approx(krippendorff_alpha(without_d.drop(index="p4"), "ordinal", SCALE), abs=1e-12)
    reference = alpha_from_coincidences(ratings.to_numpy().tolist(), "ordinal")
    assert alpha == pytest.approx(float(reference), abs=1e-9)

    report = agreement_report(ratings, "ordinal", labels=SCALE)
    assert (report.n_items, report.n_raters, report.fleiss_kappa, report.fleiss_n_items) == (6, 4, None, 0)
    json.dumps(report.to_dict(), allow_nan=False)  # JSON-safe: no NaN anywhere


# --------------------------------------------------------------------------- versus truth


def test_versus_truth_hand_computed():
    index = pd.Index(["i1", "i2", "i3", "i4", "i5"], name="item")
    truth = pd.Series([0, 1, 2, -1, nan], index=index, name="truth")
    ratings = pd.DataFrame({"good": [0, 1, 1, -1, 2], "flat": [1, 1, 1, nan, 1]}, index=index, dtype=float)
    result = versus_truth(ratings, truth, SCALE)
    good = result["good"]
    # i5 has no truth: 4 items, 3 exact matches. Ranks: good (2, 3.5, 3.5, 1), truth (2, 3, 4, 1);
    # centred (-.5, 1, 1, -1.5) and (-.5, .5, 1.5, -1.5): cov 4.5, variances 4.5 and 5 -> sqrt(.9).
    assert good.n == 4
    assert good.accuracy == pytest.approx(3 / 4)
    assert good.spearman == pytest.approx(math.sqrt(0.9), abs=1e-12)
    assert good.cohen_kappa_quadratic == pytest.approx(
        cohen_kappa_score([0, 1, 1, -1], [0, 1, 2, -1], labels=SCALE, weights="quadratic"))
    flat = result["flat"]  # a constant rater: Spearman is undefined (scipy warns, gives nan)
    assert (flat.n, flat.accuracy, flat.spearman) == (3, pytest.approx(1 / 3), None)


def test_truth_matched_by_item_not_position():
    ratings = pd.DataFrame({"a": [0.0, 1.0, 2.0]}, index=pd.Index(["x", "y", "z"], name="item"))
    truth = pd.Series([2.0, 1.0, 0.0], index=["z", "y", "x"])
    assert versus_truth(ratings, truth, SCALE)["a"].accuracy == 1.0


# --------------------------------------------------------------------------- report


def test_report_shape_and_default_labels():
    index = pd.Index([1, 2, 3, 4], name="item")
    ratings = pd.DataFrame({"a": [0, 1, 1, -1], "b": [0, 1, 0, -1]}, index=index, dtype=float)
    truth = pd.Series([0, 2, 1, -1], index=index, dtype=float)
    report = agreement_report(ratings, "interval", truth=truth)
    assert list(report.to_dict()) == ["n_items", "n_raters", "level", "labels", "krippendorff_alpha", "fleiss_kappa",
                            "fleiss_n_items", "pairwise", "vs_truth"]
    assert report.labels == [-1, 0, 1, 2]  # union with the truth; ints, not floats
    assert all(type(label) is int for label in report.labels)
    assert report.krippendorff_alpha == pytest.approx(float(alpha_from_coincidences(
        ratings.to_numpy().tolist(), "interval")), abs=1e-9)
    assert set(report.vs_truth) == {"a", "b"}
    assert "vs_truth" not in agreement_report(ratings, "interval").to_dict()
    json.dumps(report.to_dict(), allow_nan=False)
    assert AgreementReport.from_dict(json.loads(json.dumps(report.to_dict()))) == report  # the JSON reads back


def test_report_level_checks():
    text = pd.DataFrame({"a": ["x", "y"], "b": ["x", "x"]}, dtype=object)
    assert agreement_report(text, "nominal").labels == ["x", "y"]
    with pytest.raises(CalibrateError, match="level 'interval' needs numeric"):
        agreement_report(text, "interval")
    with pytest.raises(CalibrateError, match="level must be one of"):
        agreement_report(synthetic_table(), "ratio")


# --------------------------------------------------------------------------- bootstrap


def test_percentile_bounds_skip_undefined_replicates():
    # Replicates defined two times in three: the bounds come from the defined ones only.
    draws = np.array([np.nan, 1.0, 2.0] * 100)
    low, high = percentile_bounds(draws, 0.95)
    assert 1.0 <= low < high <= 2.0

    # Defined in about a quarter of replicates: they would describe a biased subset, so no interval.
    assert percentile_bounds(np.array([np.nan, np.nan, np.nan, 1.0] * 100), 0.95) == (None, None)


# --------------------------------------------------------------------------- loading


CSV_TEXT = "item,judge_a,judge_b,truth\np1,0,1,0\np2,,-1,-1\np3,2,2,\np4,-2,1.5,1\n"


def test_load_csv_and_parquet_round_trip(tmp_path):
    (tmp_path / "ratings.csv").write_text(CSV_TEXT)
    ratings, truth = load_ratings(tmp_path / "ratings.csv")
    assert truth is None
    assert list(ratings.index) == ["p1", "p2", "p3", "p4"] and ratings.index.name == "item"
    assert list(ratings.columns) == ["judge_a", "judge_b", "truth"]
    assert ratings["judge_a"].tolist()[0] == 0 and math.isnan(ratings["judge_a"].tolist()[1])
    assert ratings["judge_b"].tolist() == [1, -1, 2, 1.5]

    frame = pd.DataFrame({"item": ["p1", "p2", "p3", "p4"], "judge_a": [0, nan, 2, -2],
                          "judge_b": [1, -1, 2, 1.5], "truth": [0, -1, nan, 1]})
    frame.to_parquet(tmp_path / "ratings.parquet", index=False)
    from_parquet, _ = load_ratings(tmp_path / "ratings.parquet")
    pd.testing.assert_frame_equal(from_parquet, ratings)

    (tmp_path / "ratings.tsv").write_text(CSV_TEXT.replace(",", "\t"))
    pd.testing.assert_frame_equal(load_ratings(tmp_path / "ratings.tsv")[0], ratings)


def test_load_truth_column_and_text_labels(tmp_path):
    (tmp_path / "ratings.csv").write_text(CSV_TEXT)
    ratings, truth = load_ratings(tmp_path / "ratings.csv", truth="truth")
    assert list(ratings.columns) == ["judge_a", "judge_b"]
    assert truth.name == "truth" and list(truth.index) == ["p1", "p2", "p3", "p4"]
    assert truth.iloc[[0, 1, 3]].tolist() == [0, -1, 1] and math.isnan(truth.iloc[2])

    (tmp_path / "text.csv").write_text("item,a,b\n1, yes ,no\n2,no,\n3,maybe,yes\n")
    text, _ = load_ratings(tmp_path / "text.csv")
    assert text["a"].tolist() == ["yes", "no", "maybe"]
    assert text["b"].tolist()[0] == "no" and pd.isna(text["b"].tolist()[1])
    assert agreement_report(text, "nominal").labels == ["maybe", "no", "yes"]


@pytest.mark.parametrize("name, content, truth, message", [
    ("missing.csv", None, None, "cannot read"),
    ("ratings.xlsx", "item,a,b\n1,0,0\n", None, "unsupported file type"),
    ("broken.parquet", "not parquet", None, "cannot read"),
    ("noitem.csv", "id,a,b\n1,0,0\n", None, "no 'item' column"),
    ("onerater.csv", "item,a\n1,0\n", None, "at least 2 rater column"),
    ("onlytruth.csv", "item,truth\n1,0\n", "truth", "at least 1 rater column"),
    ("dups.csv", "item,a,b\nx1,0,0\nx2,1,1\nx1,2,2\n", None, "duplicate item id 'x1' (rows 1, 3)"),
    ("mixed.csv", "item,a,b\n1,0,0\n2,high,1\n", None, "column 'a' mixes numbers and text (row 1: 0, row 2: 'high')"),
    ("kinds.csv", "item,a,b\n1,0,low\n", None, "columns mix numbers and text"),
    ("notruth.csv", "item,a,b\n1,0,0\n", "gold", "no truth column 'gold'"),
    ("noid.csv", "item,a,b\n1,0,0\n,1,1\n", None, "row 2: empty 'item'"),
])
def test_load_errors_name_the_file(tmp_path, name, content, truth, message):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(CalibrateError, match=re.escape(name)) as error:
        load_ratings(path, truth=truth)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_loaded_table_feeds_the_report():
    path = Path("judges.csv")  # relative: the autouse fixture runs each test in its own tmp_path
    table = synthetic_table(seed=11, n_items=20, n_raters=3)
    table.insert(0, "item", [f"pair-{k:03d}" for k in range(20)])
    table.to_csv(path, index=False)
    ratings, _ = load_ratings(path)
    assert ratings.index[0] == "pair-000"
    report = agreement_report(ratings, "ordinal", labels=SCALE)
    direct = krippendorff.alpha(reliability_data=table.drop(columns="item").to_numpy().T,
                                value_domain=SCALE, level_of_measurement="ordinal")
    assert report.krippendorff_alpha == pytest.approx(direct, abs=1e-9)


def test_kappa_interval_covers_the_full_sample_kappa():
    """Each replicate's kappa is `kappa_from_confusion` of a resampled confusion matrix (held equal to
    sklearn in tests/test_agreement_counts.py); over 2000 replicates the interval contains the
    full-sample kappa, for every weighting."""

    from calibrate.stats.agreement import kappa_interval

    rng = np.random.default_rng(3)
    labels = [-2, -1, 0, 1, 2]
    a = rng.integers(-2, 3, size=40)
    b = np.clip(a + rng.integers(-1, 2, size=40), -2, 2)
    for weights in (None, "linear", "quadratic"):
        low, high = kappa_interval(pd.DataFrame({"a": a, "b": b}).astype(float), labels, weights, n_boot=2000)
        assert low < cohen_kappa_score(a, b, labels=labels, weights=weights) < high


def test_agreement_command_prints_the_json_users_script_against(tmp_path):
    """Through the CLI: keys, values against sklearn / statsmodels / krippendorff called
    directly, --truth, --labels (a scale whose middle label nobody used), and a one-line error."""
    from statsmodels.stats.inter_rater import aggregate_raters, fleiss_kappa

    table = pd.DataFrame({"item": ["a", "b", "c", "d", "e", "f"], "r1": [-2, -1, 1, 2, 2, -2],
                          "r2": [-2, -1, 1, 1, 2, None], "r3": [-1, -1, 2, 2, 2, -2], "gold": [-2, -1, 1, 2, 2, -2]})
    path = tmp_path / "ratings.csv"
    table.to_csv(path, index=False)
    command = ["agreement", "--ratings", str(path), "--truth", "gold"]
    report = json.loads(cli(*command, "--labels=-2,-1,0,1,2", check=True).stdout)
    assert set(report) >= {"n_items", "krippendorff_alpha", "fleiss_kappa", "fleiss_n_items", "pairwise", "vs_truth"}
    assert report["n_items"] == 6 and report["fleiss_n_items"] == 5 and report["labels"] == [-2, -1, 0, 1, 2]
    raters = table[["r1", "r2", "r3"]].to_numpy(float)
    assert report["krippendorff_alpha"] == pytest.approx(krippendorff.alpha(
        reliability_data=raters.T, level_of_measurement="ordinal", value_domain=[-2, -1, 0, 1, 2]), abs=1e-9)
    complete = raters[~np.isnan(raters).any(axis=1)]
    assert report["fleiss_kappa"] == pytest.approx(fleiss_kappa(aggregate_raters(complete)[0]), abs=1e-9)
    r1_r2 = next(p for p in report["pairwise"] if (p["a"], p["b"]) == ("r1", "r2"))
    assert r1_r2["n"] == 5 and r1_r2["cohen_kappa_quadratic"] == pytest.approx(cohen_kappa_score(
        [-2, -1, 1, 2, 2], [-2, -1, 1, 1, 2], labels=[-2, -1, 0, 1, 2], weights="quadratic"), abs=1e-9)
    assert report["vs_truth"]["r1"] == pytest.approx({"n": 6, "accuracy": 1.0, "cohen_kappa_quadratic": 1.0,
                                                      "spearman": 1.0}, abs=1e-12)
    observed_scale = json.loads(cli(*command, check=True).stdout)
    assert observed_scale["labels"] == [-2, -1, 1, 2]  # 0 unused: only --labels restores the distances
    assert observed_scale["pairwise"][0]["cohen_kappa_quadratic"] != r1_r2["cohen_kappa_quadratic"]
    failed = cli(*command[:-2], "--truth", "nope")
    assert failed.returncode == 2 and failed.stderr.count("\n") == 1 and "ratings.csv" in failed.stderr
