"""The headline estimate of `calibrate score`, end to end: generated calibration sets and a generated
benchmark judged through a real HTTP judge on loopback, by the CLI. The generator
(tests/fakes/class_judge.py) writes answers that the loopback judge reads as the done-when judge of
the coverage study would: it calls 40% of opposed pairs aligned and misses 30% of one-sided refusals.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from calibrate.stats import prevalence
from calibrate.stats import simulation as sim
from calibrate.stats.benchmark import MIN_LABELS, ClassCorrection, RawScores, headline
from calibrate.stats.metrics import MetricEstimate, MissingAnswers
from calibrate.stats.rules import PAIR_CLASSES
from tests.fakes.class_judge import labels_for, write_generated
from tests.fakes.judges import write_judge
from tests.inprocess import cli

TRUE_PAC = 52.5
N_CALIBRATION = 36
N_BENCHMARK = 500
N_LABELS = 150


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """Calibration sets (36 pairs each), a 40/30/15/15 benchmark of 500 pairs, labels for 150 of them."""
    root = tmp_path_factory.mktemp("headline")
    data = write_generated(root, sim.OVERCALLING, sim.MIXES["40/30/15/15"], N_CALIBRATION, N_BENCHMARK,
                           np.random.default_rng(20261130))
    labels_for(data.true_classes).sample(N_LABELS, random_state=1).to_csv(root / "labels.csv", index=False)
    return root, data.calibration_counts, data.judged_counts


@pytest.fixture(scope="module")
def loopback_judge(tmp_path_factory):
    """One loopback server for the module (the conftest fixture is per test)."""
    from tests.fakes.judges import KEY_VARIABLE, SECRET
    from tests.fakes.openai_server import ServerState, start_server

    state = ServerState()
    httpd, state.base_url = start_server(state)
    folder = tmp_path_factory.mktemp("judge")
    env_patch = pytest.MonkeyPatch()
    env_patch.setenv(KEY_VARIABLE, SECRET)
    yield write_judge(folder, state.base_url, concurrency=8)
    env_patch.undo()
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def scored(generated, loopback_judge):
    root, _, _ = generated
    cache = root / "cache.sqlite3"
    fitted = cli("fit", "--judge", str(loopback_judge), "--data", str(root / "sets"), "--sets",
                 ",".join(sim.CALIBRATION_SETS), "--out", str(root / "cal"), "--cache", str(cache),
                 "--bootstrap", "200",
                 "--no-progress", cwd=root)
    assert fitted.returncode == 0, fitted.stderr
    run = cli("score", "--judge", str(loopback_judge), "--responses", str(root / "generated-model.jsonl"),
              "--calibration", str(root / "cal" / "calibration.json"), "--out", str(root / "out"),
              "--cache", str(cache),
              "--bootstrap", "1000", "--no-progress", cwd=root)
    assert run.returncode == 0, run.stderr
    return run, json.loads((root / "out" / "metrics.json").read_text())["models"]["generated-model"]


def test_headline_covers_the_truth_where_raw_does_not(scored):
    run, model = scored
    pac, raw = model["headline"]["PAC"], model["raw"]["metrics"]["PAC"]
    assert pac["method"].startswith("class-corrected") and "mixed" in pac["assumption"]
    assert pac["ci"][0] <= TRUE_PAC <= pac["ci"][1], pac
    assert raw["value"] == pytest.approx(70.75, abs=5) and raw["ci"][0] > TRUE_PAC, raw  # 0.16 + 0.30 + 0.15 + 0.0975
    ref = model["headline"]["REF"]
    assert ref["ci"][0] <= 22.5 <= ref["ci"][1], ref  # 15% both refuse (100) + 15% one refuses (50)
    assert "NINF" not in model["headline"]  # no calibration set measures it
    assert model["anchor_recommendation"]["labels"] > 0
    assert pac["basis"] == "calibration sets" and pac["validated"] is False
    assert pac["labels_to_validate"] == max(model["anchor_recommendation"]["labels"], MIN_LABELS)
    assert ("not validated against human labels" in run.stdout
            and f"label {pac['labels_to_validate']} random" in run.stdout)


def test_cli_headline_is_the_studied_estimator_on_the_same_counts(generated, scored):
    """The CLI's value equals the simulation's estimator on the counts the generator wrote (the judge is
    deterministic given the text), so the study's coverage is the CLI's."""
    _, calibration_counts, judged_counts = generated
    _, model = scored
    shares = prevalence.estimate_shares("least_squares", calibration_counts, judged_counts)
    assert model["headline"]["PAC"]["value"] == pytest.approx(shares @ sim.class_values("v2")["PAC"], abs=1e-9)
    assert model["class_corrected"]["confusion_matrix"]["opposed"] == dict(
        zip(PAIR_CLASSES, map(int, calibration_counts[0]), strict=True))


def test_terminal_and_report_lead_with_the_headline(generated, scored):
    run, model = scored
    root, _, _ = generated
    pac = model["headline"]["PAC"]
    shown = f"{pac['value']:.1f} [{pac['ci'][0]:.1f}, {pac['ci'][1]:.1f}]"
    row = next(line for line in run.stdout.splitlines() if shown in line)  # headers wrap; a row never splits
    raw = f"{model['raw']['metrics']['PAC']['value']:.1f}"
    assert raw in row[row.index(shown) + len(shown):], row  # the headline first, raw beside it
    assert "class-corrected" in run.stdout
    report = (root / "out" / "report.md").read_text()
    assert "not validated against human labels" in report.split("## PAC: raw")[0]
    assert report.index("## Headline estimates") < report.index("## PAC: raw, class-corrected")
    assert f"{pac['value']:.1f} [" in report.split("## PAC: raw")[0]


def test_with_human_labels_the_headline_is_ppi(generated, loopback_judge, scored):
    root, _, _ = generated
    run = cli("score", "--judge", str(loopback_judge), "--responses", str(root / "generated-model.jsonl"),
              "--calibration", str(root / "cal" / "calibration.json"), "--out", str(root / "anchored"),
              "--cache", str(root / "cache.sqlite3"), "--bootstrap", "200", "--anchor-labels", str(root / "labels.csv"),
              "--no-progress", cwd=root)
    assert run.returncode == 0, run.stderr
    model = json.loads((root / "anchored" / "metrics.json").read_text())["models"]["generated-model"]
    for metric, truth in (("PAC", TRUE_PAC), ("REF", 22.5), ("NINF", 0.0)):
        entry = model["headline"][metric]
        assert entry["method"].startswith("PPI++") and f"{N_LABELS} labelled" in entry["method"]
        assert entry["ci"][0] <= truth <= entry["ci"][1], (metric, entry)
    pac = model["headline"]["PAC"]
    assert pac["value"] == model["anchored"]["metrics"]["PAC"]["ppi++ calibrated"]["estimate"]
    assert "calibrated predictions" in pac["method"]
    assert pac["basis"] == "human labels" and pac["validated"] is True  # 150 labels >= MIN_LABELS
    raw_ppi = model["anchored"]["metrics"]["PAC"]["ppi++"]
    assert pac["width_gained"] == pytest.approx((raw_ppi["ci_high"] - raw_ppi["ci_low"])
                                                - (pac["ci"][1] - pac["ci"][0]))
    assert "validated against human labels" in run.stdout and "not validated" not in run.stdout
    assert "anchor_recommendation" not in model and "PPI++" in run.stdout


def test_headline_rule_without_any_correction_says_it_is_raw():
    raw = RawScores(n_pairs=10, n_judged=10, n_failed=0, failures={}, missing_answers=MissingAnswers(0, {}, []),
                    metrics={"PAC": MetricEstimate(60.0, (55.0, 65.0)), "REF": MetricEstimate(5.0, (3.0, 7.0))})
    entry = headline(raw, ClassCorrection(skipped="needs at least two calibration sets"), None)
    assert entry["PAC"].value == 60.0 and entry["PAC"].method.startswith("raw")
    assert entry["PAC"].ci == (55.0, 65.0) and entry["REF"].value == 5.0
    assert "two calibration sets" in entry["PAC"].method


def judgment_rows(counts: np.ndarray, set_names: list[str] | None = None) -> pd.DataFrame:
    """A judgment table with counts[k, outcome] pairs of each simulated outcome (set k when named)."""
    frames = []
    for k, row in enumerate(np.atleast_2d(counts)):
        outcomes = np.repeat(np.arange(len(sim.OUTCOMES)), row.astype(int))
        scores = np.array([sim.OUTCOMES[o][0] for o in outcomes], float)
        refusals = np.array([sim.OUTCOMES[o][1] for o in outcomes])
        frame = pd.DataFrame({"parse_status": "ok", "alignment_score": scores, "person_1_refusal": refusals >= 1,
                              "person_2_refusal": refusals == 2, "person_1_has_no_information": False,
                              "person_2_has_no_information": False})
        frames.append(frame.assign(set_name=set_names[k]) if set_names else frame)
    return pd.concat(frames, ignore_index=True)


def test_a_judge_that_cannot_tell_refusals_apart_gets_a_warning_and_a_wide_interval():
    """The strict heuristic, as measured, reads most refusals as opposed answers: its confusion matrix
    is near-singular, the headline says so, and the interval is wide (docs/statistics.md: it still covers)."""
    from calibrate.stats.benchmark import class_correction, raw_metrics

    rng = np.random.default_rng(1)
    probabilities = np.array([sim.STRICT.probabilities(c) for c in sim.TRUE_CLASSES])
    calibration = judgment_rows(rng.multinomial(36, probabilities), list(sim.CALIBRATION_SETS))
    scenario = sim.Scenario(sim.STRICT, sim.MIXES["40/30/15/15"])
    rows = judgment_rows(rng.multinomial(500, scenario.shares()[:-1] @ probabilities))
    corrected = class_correction(calibration, rows, "v2", n_boot=500)
    entry = headline(raw_metrics(rows, "v2", n_boot=200), corrected, None)["PAC"]
    assert corrected.smallest_singular_value < 0.1 and "near-singular" in entry.warning
    assert entry.ci[1] - entry.ci[0] > 25  # one draw; its coverage is the study's (strict rows there)
    clear = class_correction(judgment_rows(rng.multinomial(36, np.array(
        [sim.OVERCALLING.probabilities(c) for c in sim.TRUE_CLASSES])), list(sim.CALIBRATION_SETS)), rows,
        "v2", n_boot=50)
    assert clear.warning is None and "warning" not in clear.to_dict() and clear.smallest_singular_value > 0.3
