"""Numbers that cannot be confidently wrong (issue 24): every headline says what it rests on; human labels
validate it where the judge behaves differently on the benchmark than on the calibration sets; a judge
that confuses two classes gets a warning and an identified set, never a narrow interval away from the truth."""

from __future__ import annotations

import numpy as np
import pytest

from calibrate.stats import prevalence
from calibrate.stats import simulation as sim
from calibrate.stats.benchmark import MIN_LABELS, class_correction, headline, raw_metrics
from tests.fakes.class_judge import long_labels, write_generated
from tests.fakes.judges import write_judge
from tests.inprocess import cli
from tests.test_headline import judgment_rows

# The done-when scenario: the over-calling judge on the calibration sets, harder on the benchmark's
# answers (sim.HARDER), 20% truly mixed pairs; 150 random pairs labelled by humans.
SCENARIO = sim.Scenario(sim.OVERCALLING, sim.with_mixed_share(sim.MIXES["40/30/15/15"], 0.2),
                        benchmark_judge=sim.HARDER)
REPLICATIONS, N_LABELS = 20, 150


def generate(root, seed):
    data = write_generated(root, SCENARIO.judge, SCENARIO.mix, SCENARIO.n_calibration, SCENARIO.n_benchmark,
                           np.random.default_rng(seed), benchmark_judge=SCENARIO.benchmark_judge)
    picked = np.random.default_rng(seed + 1000).choice(SCENARIO.n_benchmark, N_LABELS, replace=False)
    long_labels(data, picked).to_csv(root / "labels.csv", index=False)
    return data


def test_human_labels_validate_the_headline_where_the_judge_shifts(openai_server, tmp_path):
    """20 fresh replications through the library's `score` (out=None): the validated PPI++ headline covers
    the true PAC in at least 17 and is at most 20 points wide on average, while the class correction,
    whose assumption the shift breaks, is flagged by the audit of the labels."""
    from calibrate import fit, score

    truth = SCENARIO.truth()["PAC"]
    judge = write_judge(tmp_path, openai_server.base_url, concurrency=8)
    covered, widths, rejected = 0, [], 0
    for r in range(REPLICATIONS):
        root = tmp_path / f"r{r}"
        data = generate(root, r)
        fitted = fit(str(judge), data=str(data.sets_dir), sets=list(sim.CALIBRATION_SETS), n_boot=50)
        result = score(str(judge), [str(data.responses)], calibration=fitted, human_labels=root / "labels.csv",
                       n_boot=100, seed=r)
        model = result.models["generated-model"]
        pac = model.headline["PAC"]
        assert pac.basis == "human labels" and pac.validated and model.anchored.n_labeled == N_LABELS
        covered += pac.ci[0] <= truth <= pac.ci[1]
        widths.append(pac.ci[1] - pac.ci[0])
        rejected += model.audit is not None and model.audit.verdict == "rejected"
    assert covered >= 17, (covered, truth)
    assert np.mean(widths) <= 20, widths
    assert rejected >= REPLICATIONS // 2  # the labels show the judge reads benchmark pairs otherwise


def test_the_same_run_without_labels_is_not_validated(openai_server, tmp_path):
    judge = write_judge(tmp_path, openai_server.base_url, concurrency=8)
    data = generate(tmp_path, 99)
    fitted = cli("fit", "--judge", str(judge), "--data", str(data.sets_dir), "--sets", ",".join(sim.CALIBRATION_SETS),
                 "--out", str(tmp_path / "cal"), "--bootstrap", "100", "--no-progress")
    assert fitted.returncode == 0, fitted.stderr
    run = cli("score", "--judge", str(judge), "--responses", str(data.responses), "--calibration",
              str(tmp_path / "cal" / "calibration.json"), "--out", str(tmp_path / "out"), "--bootstrap", "100",
              "--no-progress")
    assert run.returncode == 0, run.stderr
    assert "not validated against human labels" in run.stdout
    import json
    pac = json.loads((tmp_path / "out" / "metrics.json").read_text())["models"]["generated-model"]["headline"]["PAC"]
    assert pac["validated"] is False and pac["basis"] == "calibration sets"
    assert pac["labels_to_validate"] >= MIN_LABELS and f"label {pac['labels_to_validate']} random pairs" in run.stdout


def blind_tables(seed: int):
    """Calibration judgments and a 40/30/15/15 benchmark judged by the judge blind to one-sided refusals."""
    rng = np.random.default_rng(seed)
    probabilities = np.array([sim.BLIND.probabilities(c) for c in sim.TRUE_CLASSES])
    calibration = judgment_rows(rng.multinomial(36, probabilities), list(sim.CALIBRATION_SETS))
    rows = judgment_rows(rng.multinomial(500, sim.Scenario(sim.BLIND, sim.MIXES["40/30/15/15"]).shares()[:-1]
                                         @ probabilities))
    return calibration, rows


@pytest.mark.parametrize("seed", range(5))
def test_a_judge_blind_to_one_refusals_gets_the_identified_set_not_a_narrow_wrong_interval(seed):
    calibration, rows = blind_tables(seed)
    corrected = class_correction(calibration, rows, "v2", n_boot=300)
    entries = headline(raw_metrics(rows, "v2", n_boot=50), corrected, None, 120)
    truth = sim.Scenario(sim.BLIND, sim.MIXES["40/30/15/15"]).truth()
    for metric in ("PAC", "REF"):
        entry = entries[metric]
        assert entry.value is None and "opposed and one_refusal" in entry.withheld
        assert entry.ci[0] <= truth[metric] <= entry.ci[1], (metric, entry.ci)
        assert entry.to_dict()["value"] is None
    assert "one_refusal" in entries["PAC"].warning and not entries["PAC"].validated


def test_fit_warns_naming_the_two_classes_the_judge_confuses():
    from calibrate.stats.calibration import confusion_warnings
    from calibrate.stats.metrics import confusion_matrix, set_report

    calibration, _ = blind_tables(0)
    reports = {name: set_report(calibration[calibration["set_name"] == name], name, "v2", 50, 0)
               for name in sim.CALIBRATION_SETS}
    warnings = confusion_warnings(confusion_matrix(reports))
    assert len(warnings) == 1 and "opposed pairs from one_refusal pairs" in warnings[0]
    clear, _ = blind_tables(0)
    probabilities = np.array([sim.OVERCALLING.probabilities(c) for c in sim.TRUE_CLASSES])
    clear = judgment_rows(np.random.default_rng(1).multinomial(36, probabilities), list(sim.CALIBRATION_SETS))
    assert confusion_warnings(confusion_matrix({name: set_report(clear[clear["set_name"] == name], name, "v2", 50, 0)
                                                for name in sim.CALIBRATION_SETS})) == []


def test_identified_set_matches_a_brute_force_split():
    """The identified set of a pooled pair of classes is every split of its share: checked against the
    metric of each split, each solved by least squares with the split fixed."""
    counts = np.array([[30, 0, 0, 0, 6], [0, 0, 36, 0, 0], [0, 0, 0, 0, 36], [31, 0, 0, 0, 5]], float)
    observed = np.array([200, 0, 150, 0, 150], float)
    values = np.stack([sim.class_values("v2")[m] for m in sim.METRICS], axis=-1)
    found = prevalence.corrected_metrics("least_squares", counts, observed, values, sim.TRUE_CLASSES, 400,
                                         np.random.default_rng(0))
    assert [list(g) for g in found["groups"]] == [[0, 3], [1], [2]] and not found["identified"].any()
    pooled = found["shares"][0]
    splits = np.linspace(0, 1, 11)
    pac = [pooled * (t * values[0, 0] + (1 - t) * values[3, 0]) + found["shares"][1:] @ values[1:3, 0] for t in splits]
    assert found["low"][0] <= min(pac) and max(pac) <= found["high"][0]


def anchored_record(basis: str, n_labeled: int):
    from calibrate.stats.benchmark import Anchored, PPIEstimate

    def estimate(method, low, high):
        return PPIEstimate(method, (low + high) / 2, low, high, n_labeled, 400, 0.05, 0.5)

    entry = {"ppi++": estimate("ppi++", 40.0, 60.0), "ppi": estimate("ppi", 39.0, 61.0),
             "classical": estimate("classical", 38.0, 62.0),
             "ppi++ calibrated": estimate("ppi++ calibrated", 42.0, 57.0)}
    return Anchored(anchor="expensive-judge" if basis == "anchor judge" else "human labels (l.csv)", basis=basis,
                    fraction=0.2 if basis == "anchor judge" else None, n_labeled=n_labeled, n_unlabeled=400,
                    n_cheap_failed=0, n_anchor_failed=0, metrics={"PAC": entry, "REF": entry, "NINF": None})


def test_an_anchor_judge_headline_says_whose_metric_it_is_and_is_never_validated():
    from calibrate.reports.score import validation_text
    from calibrate.stats.benchmark import ClassCorrection, RawScores
    from calibrate.stats.metrics import MissingAnswers

    raw = RawScores(n_pairs=500, n_judged=500, n_failed=0, failures={}, missing_answers=MissingAnswers(0, {}, []),
                    metrics={})
    pac = headline(raw, ClassCorrection(skipped="-"), anchored_record("anchor judge", 300))["PAC"]
    assert pac.basis == "anchor judge" and pac.validated is False
    assert "estimates expensive-judge's PAC, not the truth" in pac.method
    assert "anchor judge's metric, not the truth" in validation_text(pac, None)
    assert pac.value == 49.5 and pac.width_gained == pytest.approx(5.0)  # the calibrated predictions' interval


def test_fewer_human_labels_than_min_labels_warn_and_do_not_validate():
    from calibrate.stats.benchmark import ClassCorrection, RawScores
    from calibrate.stats.metrics import MissingAnswers

    raw = RawScores(n_pairs=500, n_judged=500, n_failed=0, failures={}, missing_answers=MissingAnswers(0, {}, []),
                    metrics={})
    few = headline(raw, ClassCorrection(skipped="-"), anchored_record("human labels", MIN_LABELS - 1))["PAC"]
    assert few.basis == "human labels" and not few.validated and f"fewer than the {MIN_LABELS}" in few.warning
    assert few.labels_to_validate == MIN_LABELS
    enough = headline(raw, ClassCorrection(skipped="-"), anchored_record("human labels", MIN_LABELS))["PAC"]
    assert enough.validated and enough.warning is None and "warning" not in enough.to_dict()


def test_transport_audit_matches_scipy_and_rejects_a_shifted_judge():
    """The audit's G statistic is scipy's per class, summed; a judge that reads the labelled pairs as on the
    calibration sets passes, one harder on them is rejected."""
    from scipy.stats import chi2_contingency

    from calibrate.stats.benchmark import transport_audit

    rng = np.random.default_rng(3)
    same = np.array([sim.OVERCALLING.probabilities(c) for c in sim.TRUE_CLASSES])
    harder = np.array([sim.HARDER.probabilities(c) for c in sim.TRUE_CLASSES])
    calibration = judgment_rows(rng.multinomial(200, same), list(sim.CALIBRATION_SETS))
    for probabilities, verdict in ((same, "consistent"), (harder, "rejected")):
        counts = rng.multinomial(60, probabilities)  # 60 labelled pairs of each true class
        rows = judgment_rows(counts).assign(pair_id=lambda f: range(len(f)))
        truth = np.repeat(np.arange(4), counts.sum(axis=1))
        labels = rows.assign(alignment_score=[(-2, 2, 2, 0)[t] for t in truth],
                             person_1_refusal=[t == 2 for t in truth], person_2_refusal=[t in (2, 3) for t in truth])
        audit = transport_audit(calibration, rows, labels)
        assert audit.verdict == verdict and audit.n_labeled == 240 and audit.n_mixed == 0
        expected = 0.0
        for k in range(4):
            table = np.array([calibration_counts_row(calibration, k), judged_row(rows[truth == k])])
            table = table[:, table.sum(axis=0) > 0]
            if table.shape[1] > 1:
                expected += chi2_contingency(table, correction=False, lambda_="log-likelihood").statistic
        assert audit.statistic == pytest.approx(expected)


def judged_row(rows):
    from calibrate.stats.benchmark import judged_classes
    from calibrate.stats.rules import PAIR_CLASSES

    seen = judged_classes(rows)
    return [np.sum(seen == j) for j in PAIR_CLASSES]


def calibration_counts_row(calibration, k):
    return judged_row(calibration[calibration["set_name"] == sim.CALIBRATION_SETS[k]])
