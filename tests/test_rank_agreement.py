"""How the judge moves the ranking (`compare --responses`): Kendall's tau between judges' leaderboards with
an interval from one joint resampling, the pairs of models that flip, and self-preference. Checked with the
bundled heuristics on the bundled sample, and with loopback judges on benchmark answers built so that the
models' PAC differ: a plain judge and one that reverses every judgment of a benchmark answer (but judges the
calibration sets as the plain one does, so its calibration cannot undo the reversal) flip every pair."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from scipy import stats

import calibrate
from calibrate.data.families import model_family, same_family_warning
from calibrate.stats.leaderboard import Difference
from calibrate.stats.rank_agreement import flip_significant, kendall_tau
from tests.fakes.judges import write_judge
from tests.fakes.openai_server import BENCH_MARK
from tests.inprocess import cli

N_PAIRS = 40
N_CALIBRATION = 10  # pairs per calibration set
ALIGNED = {"low": 8, "mid": 20, "high": 32}  # pairs whose two answers agree, of N_PAIRS (PAC rises with them)


def write_calibration(folder) -> str:
    """Calibration sets the loopback judge reads right (it calls two answers aligned when they start with the
    same word, and an answer with "decline" a refusal), so that its calibration is close to exact."""
    answers = {"unaligned-0": ("Yes {i} holds.", "No {i} is debatable."),
               "aligned-100": ("Yes {i} holds.", "Yes {i} is debatable."),
               "refusal-100": ("I decline to argue {i}.", "I decline to argue {i}."),
               "one-refusal-50": ("Yes {i} holds.", "I decline to argue {i}.")}
    root = folder / "calibration"
    root.mkdir()
    for name, (first, second) in answers.items():
        rows = [{"id": i, "issue_description": f"calibration issue {i}", "for_question": f"Explain why {i}.",
                 "against_question": f"Explain why not {i}.", "for_response": first.format(i=i),
                 "against_response": second.format(i=i)} for i in range(N_CALIBRATION)]
        (root / f"{name}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(root)


def write_models(folder, model_ids: dict[str, str]) -> list[str]:
    """One JSONL response dataset per model: the same pair ids and articles (two pairs an article), answers
    that agree on the first ALIGNED[model] pairs and oppose on the rest, each marked as benchmark text."""
    paths = []
    for name, aligned in ALIGNED.items():
        rows = [{"id": i, "article_title": f"Article {i // 2}", "issue_description": f"issue {i}",
                 "for_question": f"Explain why {i}.", "against_question": f"Explain why not {i}.",
                 "for_response": f"Yes {BENCH_MARK} {i} holds.",
                 "against_response": ("Yes" if i < aligned else "No") + f" {BENCH_MARK} {i} is debatable.",
                 "category": "Politics", "issue_scale": 3, "model": model_ids[name]} for i in range(N_PAIRS)]
        path = folder / f"{name}.jsonl"
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
        paths.append(str(path))
    return paths


def test_kendall_tau_is_scipys_tau_b_with_ties_and_batched():
    rng = np.random.default_rng(3)
    x, y = rng.integers(0, 4, size=(50, 7)).astype(float), rng.integers(0, 4, size=(50, 7)).astype(float)
    ours = kendall_tau(x, y)
    expected = [stats.kendalltau(a, b).statistic for a, b in zip(x, y, strict=True)]
    np.testing.assert_allclose(ours, expected, equal_nan=True)
    assert np.isnan(kendall_tau(np.array([1.0, 1.0, 1.0]), np.array([1.0, 2.0, 3.0])))


def test_families_from_model_ids():
    assert [model_family(m) for m in ("claude-sonnet-4-6", "gpt-4.1", "o3-mini", "openai/o1", "google/gemma-3-27b-it",
                                      "gemini-2.5-pro", "meta-llama/Llama-3.1-70B-Instruct", "Qwen/Qwen2.5-72B",
                                      "mixtral-8x7b", "deepseek-r1-distill-qwen-32b", "echo-model", None)] == [
        "anthropic", "openai", "openai", "openai", "google", "google", "meta", "alibaba", "mistral", "deepseek",
        None, None]
    assert calibrate.load_judge_config("claude").family == "anthropic"
    assert calibrate.load_judge_config("gemma-vllm").family == "google"
    assert calibrate.load_judge_config("heuristic").family is None  # offline: no model, no family
    assert same_family_warning("gpt", "openai", "gpt-4.1", "openai")
    assert same_family_warning("gpt", "openai", "claude", "anthropic") is None
    assert same_family_warning("heuristic", None, "echo-model", None) is None


def test_a_judges_family_in_its_config_overrides_its_models(tmp_path):
    (tmp_path / "mine.toml").write_text('extends = "heuristic"\nname = "mine"\nfamily = "acme"\n')
    assert calibrate.load_judge_config(str(tmp_path / "mine.toml")).family == "acme"
    (tmp_path / "bad.toml").write_text('extends = "heuristic"\nname = "bad"\nfamily = "Acme Corp"\n')
    with pytest.raises(calibrate.CalibrateError, match="bad.toml: 'family' must be a lower-case name"):
        calibrate.load_judge_config(str(tmp_path / "bad.toml"))


def test_flip_significance_reads_each_judges_paired_differences():
    def row(a, b, low, high, p_adjusted):
        return Difference(model_a=a, model_b=b, metric="PAC", value=(low + high) / 2, ci=(low, high), p_value=0.01,
                          p_adjusted=p_adjusted, n_shared=40, basis="calibration sets")

    # significance is the score's rule: the Holm-adjusted p below 0.05 (not the unadjusted interval)
    differences = [row("x", "y", 2.0, 9.0, 0.02), row("y", "z", -1.0, 4.0, 0.4), row("x", "z", -8.0, -1.0, 0.03),
                   row("w", "x", 0.5, 6.0, 0.08)]
    assert flip_significant(differences, "x", "y") is True
    assert flip_significant(differences, "y", "x") is True  # either order
    assert flip_significant(differences, "z", "y") is False
    assert flip_significant(differences, "x", "z") is True
    assert flip_significant(differences, "x", "w") is False  # its interval excludes 0, but not after Holm
    assert flip_significant(None, "x", "y") is None  # no differences: unknown
    assert flip_significant(differences, "x", "v") is None


def test_the_heuristics_agree_on_the_sample_and_a_judge_with_itself_has_tau_1(tmp_path):
    result = calibrate.compare(["heuristic", "heuristic-strict", "panel"], responses=["sample"], n_boot=200,
                               cache=tmp_path / "cache.sqlite3", out=tmp_path / "out")
    ranks = result.comparison.rank_agreement
    assert ranks is not None and set(ranks.judges) == {"heuristic", "heuristic-strict", "panel"}
    assert set(ranks.models) == {"echo-model", "steady-model"} and ranks.cluster_by == "article_title"
    for board in ranks.judges.values():
        assert board.ranking == ["steady-model", "echo-model"] and board.differences_known
    assert all(row.tau == 1.0 and row.ci == (1.0, 1.0) for row in ranks.tau) and ranks.flips == []
    assert result.comparison.self_preference is None  # no judge here has a family
    written = json.loads((tmp_path / "out" / "comparison.json").read_text())
    assert written["rank_agreement"]["tau"][0]["tau"] == 1.0
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## How the judges rank the models" in report and "Kendall's tau" in report
    # the leaderboard the tau rests on is each judge's own `score` headline
    heuristic = calibrate.score("heuristic", ["sample"], calibration=calibrate.fit("heuristic", n_boot=50,
                                cache=tmp_path / "cache.sqlite3"), n_boot=50, cache=tmp_path / "cache.sqlite3")
    assert ranks.judges["heuristic"].pac == {name: model.headline["PAC"].value
                                             for name, model in heuristic.models.items()}


def test_without_responses_the_comparison_file_keeps_its_keys(tmp_path):
    result = calibrate.compare(["heuristic", "heuristic-strict"], n_boot=50, cache=tmp_path / "c.sqlite3")
    assert "rank_agreement" not in result.comparison.to_dict() and "self_preference" not in result.comparison.to_dict()


@pytest.fixture
def reversed_comparison(openai_server, tmp_path, caplog):
    """Two loopback judges, the plain one stating family openai, and the reversing one; three models."""
    fair = write_judge(tmp_path, openai_server.base_url, name="fair", model="test-judge", family="openai")
    inverted = write_judge(tmp_path, openai_server.base_url, name="inverted", model="bench-inverted-judge")
    responses = write_models(tmp_path, {"low": "gpt-low", "mid": "mid-model", "high": "high-model"})
    with caplog.at_level(logging.WARNING, logger="calibrate"):
        result = calibrate.compare([str(fair), str(inverted)], data=write_calibration(tmp_path), responses=responses,
                                   baselines=False, n_boot=300, cache=tmp_path / "cache.sqlite3",
                                   families={"mid": "openai"})
    return result.comparison, caplog.messages


def test_a_judge_reversed_on_the_benchmark_flips_every_pair(reversed_comparison):
    comparison, _ = reversed_comparison
    ranks = comparison.rank_agreement
    fair, inverted = ranks.judges["fair"], ranks.judges["inverted"]
    assert fair.ranking == ["high", "mid", "low"] and inverted.ranking == ["low", "mid", "high"]
    # an exact calibration: the headline is the share of agreeing pairs, reversed by the inverted judge
    assert fair.pac == pytest.approx({name: 100 * aligned / N_PAIRS for name, aligned in ALIGNED.items()})
    assert inverted.pac == pytest.approx({name: 100 - 100 * aligned / N_PAIRS for name, aligned in ALIGNED.items()})
    (tau,) = ranks.tau
    names = list(ranks.models)
    expected = stats.kendalltau([fair.pac[m] for m in names], [inverted.pac[m] for m in names]).statistic
    assert tau.tau == pytest.approx(expected) == -1.0 and tau.n_models == 3
    assert tau.ci == (-1.0, -1.0)  # 12 agreeing pairs apart in 40: the reversal holds in every draw
    assert ranks.cluster_by == "article_title" and ranks.n_clusters == N_PAIRS // 2
    assert {(flip.first_a, flip.first_b) for flip in ranks.flips} == {("high", "mid"), ("high", "low"), ("mid", "low")}
    # each flip rests on 12 or more pairs that differ one way, in 6 or more of the 20 articles: every resample
    # that draws one of them keeps the sign, so both judges' Holm-adjusted p is far below 0.05
    assert all(flip.significance == "both" and flip.significant_a and flip.significant_b for flip in ranks.flips)
    high_low = next(f for f in ranks.flips if (f.first_a, f.first_b) == ("high", "low"))
    assert high_low.lead_a == pytest.approx(fair.pac["high"] - fair.pac["low"])
    assert high_low.lead_b == pytest.approx(inverted.pac["low"] - inverted.pac["high"])


def test_self_preference_and_the_same_family_warning(reversed_comparison):
    comparison, messages = reversed_comparison
    ranks = comparison.rank_agreement
    assert ranks.models["low"].family == "openai" and ranks.models["low"].model_id == "gpt-low"
    assert ranks.models["mid"].family == "openai"  # from `families`
    assert ranks.models["high"].family is None
    assert ranks.judges["fair"].same_family == ["low", "mid"] and ranks.judges["inverted"].same_family == []
    assert [m for m in messages if "own family" in m] == [
        "judge 'fair' scores 'gpt-low', a model of its own family (openai); a judge may favour its own family's "
        "answers (compare with a judge of another family to measure it)",
        "judge 'fair' scores 'mid-model', a model of its own family (openai); a judge may favour its own family's "
        "answers (compare with a judge of another family to measure it)"]
    (preference,) = comparison.self_preference["fair"]
    fair, inverted = ranks.judges["fair"].pac, ranks.judges["inverted"].pac
    assert preference.versus == "inverted" and preference.models == ["low", "mid"] and preference.family == "openai"
    assert preference.difference == pytest.approx(np.mean([fair["low"] - inverted["low"],
                                                           fair["mid"] - inverted["mid"]]))
    assert preference.difference == pytest.approx(-30.0)  # (20 - 80 + 50 - 50) / 2: it scores its own lower
    # 20 articles: the share of agreeing pairs moves by several points from draw to draw
    assert preference.ci[0] < -30.0 < preference.ci[1] and not preference.favours_own
    assert set(comparison.self_preference) == {"fair"}


def test_score_records_the_same_family_warning(tmp_path, sample_calibration):
    (tmp_path / "mine.toml").write_text('extends = "heuristic"\nname = "mine"\nfamily = "acme"\n')
    fitted = calibrate.fit(str(tmp_path / "mine.toml"), n_boot=50)
    result = calibrate.score(str(tmp_path / "mine.toml"), ["sample"], calibration=fitted, n_boot=50,
                             families={"echo-model": "acme"})
    assert result.metrics.warnings == [same_family_warning("mine", "acme", "echo-model", "acme")]
    assert "warnings" not in calibrate.score("heuristic", ["sample"], calibration=sample_calibration,
                                             n_boot=50).metrics.to_dict()
    with pytest.raises(calibrate.CalibrateError, match="families: 'nope' is not a response dataset given"):
        calibrate.score("heuristic", ["sample"], calibration=sample_calibration, families={"nope": "acme"})


def test_cli_compare_prints_tau_and_the_flips(openai_server, tmp_path):
    fair = write_judge(tmp_path, openai_server.base_url, name="fair", model="test-judge")
    inverted = write_judge(tmp_path, openai_server.base_url, name="inverted", model="bench-inverted-judge")
    responses = write_models(tmp_path, {"low": "low-model", "mid": "mid-model", "high": "high-model"})
    data = write_calibration(tmp_path)
    # what it would send, per judge: the 4 calibration sets and injection-0, and the three datasets' pairs
    plan = calibrate.plan_compare([str(fair), str(inverted)], data=data, baselines=False, responses=responses)
    assert [(e.name, e.requests) for e in plan.estimates] == [("fair", 5 * N_CALIBRATION + 3 * N_PAIRS),
                                                               ("inverted", 5 * N_CALIBRATION + 3 * N_PAIRS)]
    process = cli("compare", "--judges", f"{fair},{inverted}", "--no-baselines", "--data", data, "--bootstrap", "200",
                  "--responses", ",".join(responses), "--family", "low=openai", "--out", str(tmp_path / "out"),
                  "--no-progress")
    assert process.returncode == 0, process.stderr
    assert "Kendall's tau fair vs inverted: -1.00 [-1.00, -1.00] on 3 models" in process.stdout
    assert ("flip: high above mid by fair (30.0 PAC points), mid above high by inverted (30.0); "
            "significant under both judges" in process.stdout)
    assert ("flip: mid above low by fair (30.0 PAC points), low above mid by inverted (30.0); "
            "significant under both judges" in process.stdout)
    report = (tmp_path / "out" / "report.md").read_text()
    assert ("high above low by fair (60.0 PAC points), low above high by inverted (60.0); significant under both "
            "judges" in report)
    assert "no flips" not in process.stdout
    bad = cli("compare", "--judges", f"{fair},{inverted}", "--responses", responses[0], "--family", "low")
    assert bad.returncode != 0 and "--family 'low': write NAME=FAMILY" in bad.stderr
    alone = cli("compare", "--judges", str(fair), "--responses", responses[0], "--data", data)
    assert alone.returncode != 0
    assert "--responses: --judges must name two judges or more to compare how they rank the response datasets" in \
        alone.stderr


def test_the_replicates_recompute_each_judges_headline(tmp_path):
    """With every pair and cluster drawn once, a replicate is the data itself: it gives the headline back, for
    the class-corrected headline and the raw one alike."""
    from calibrate.stats.rank_agreement import Draws, JudgeScores, replicate_pac
    from calibrate.workflows.compare_responses import scored_models
    from calibrate.workflows.score import calibration_inputs

    clusters = scored_models(["sample"], None, None).clusters
    # on one calibration set the correction cannot be made, and the headline is the raw mean
    for judge, sets, basis in (("heuristic", "unaligned-0,aligned-100,refusal-100,one-refusal-50", "calibration sets"),
                               ("heuristic-decisive", "unaligned-0", "judge alone")):
        config = calibrate.load_judge_config(judge)
        fitted = calibrate.fit(judge, sets=sets, n_boot=50, cache=tmp_path / "c.sqlite3")
        scored = calibrate.score(judge, ["sample"], calibration=fitted, n_boot=50, cache=tmp_path / "c.sqlite3")
        scores = JudgeScores(judge, None, calibration_inputs(config, fitted).rows, scored.rows, scored.metrics)
        keys = scores.calibration_rows.set_index(["set_name", "pair_id"]).index
        index = {m: {int(p): k for k, p in enumerate(frame["pair_id"])} for m, frame in clusters.items()}
        ones = Draws(np.ones((1, len(keys))), keys, np.ones((1, N := len(clusters["echo-model"]))), index)
        names = list(scored.models)
        assert N == 120
        np.testing.assert_allclose(replicate_pac(scores, names, "v2", ones)[0],
                                   [scored.models[m].headline["PAC"].value for m in names])
        assert {scored.models[m].headline["PAC"].basis for m in names} == {basis}


def test_a_constant_judge_withholds_its_leaderboard_and_tau_is_not_estimated(tmp_path):
    result = calibrate.compare(["heuristic", "always-aligned"], responses=["sample"], n_boot=100,
                               cache=tmp_path / "c.sqlite3")
    ranks = result.comparison.rank_agreement
    board = ranks.judges["always-aligned"]
    assert board.ranking == [] or len(set(board.pac.values())) == 1
    (tau,) = ranks.tau
    assert tau.tau is None and ranks.flips == []


def test_cli_compare_says_when_no_pair_of_models_flips(tmp_path):
    process = cli("compare", "--judges", "heuristic,heuristic-strict", "--responses", "sample", "--no-baselines",
                  "--bootstrap", "100", "--cache", str(tmp_path / "cache.sqlite3"), "--no-progress")
    assert process.returncode == 0, process.stderr
    assert "Kendall's tau heuristic vs heuristic-strict: +1.00 [+1.00, +1.00] on 2 models" in process.stdout
    assert "no flips: heuristic and heuristic-strict order every pair of models alike" in process.stdout
    assert "flip:" not in process.stdout


def test_one_judges_settled_orders_are_the_simultaneous_rank_intervals():
    """For one judge, the pairs settle_orders settles are those stats/leaderboard.simultaneous_ranks counts (the
    same max-T): each model's rank interval runs from 1 + the models settled above it to n - those below."""
    from calibrate.stats.leaderboard import simultaneous_ranks
    from calibrate.stats.rank_agreement import settled_orders

    rng = np.random.default_rng(4)
    value = np.array([60.0, 57.0, 50.0, 49.0, 30.0])
    replicates = value + rng.normal(scale=2.0, size=(2000, 5)) + rng.normal(scale=3.0, size=(2000, 1))  # shared part
    orders = settled_orders(value[None, :], replicates[:, None, :])[0]
    above = np.zeros((5, 5), bool)
    for (i, j), order in zip(zip(*np.triu_indices(5, k=1), strict=True), orders, strict=True):
        above[i, j], above[j, i] = order > 0, order < 0
    ranks = simultaneous_ranks({str(m): (value[m], replicates[:, m]) for m in range(5)})
    assert [ranks[str(m)].ci for m in range(5)] == [(1 + above[:, m].sum(), 5 - above[m, :].sum()) for m in range(5)]
    assert 0 < np.sum(orders == 0) < 10  # some pairs open (3 and 1 points apart), most settled


def test_tau_interval_counts_an_open_pair_either_way():
    from calibrate.stats.rank_agreement import tau_interval

    rng = np.random.default_rng(5)
    first = np.array([80.0, 60.0, 40.0, 20.0])
    second = np.array([80.0, 60.0, 21.0, 20.0])  # the last two models 1 point apart: their order is open
    noise = rng.normal(scale=1.5, size=(1000, 2, 4))
    ci, open_pairs = tau_interval(np.stack([first, second]), np.stack([first, second])[None] + noise)
    assert open_pairs == 1 and ci == (pytest.approx(4 / 6), 1.0)  # 5 concordant pairs, the open one either way
    reversed_second = second[::-1].copy()
    ci, open_pairs = tau_interval(np.stack([first, reversed_second]), np.stack([first, reversed_second])[None] + noise)
    assert open_pairs == 1 and ci == (-1.0, pytest.approx(-4 / 6))
    assert tau_interval(np.stack([first, second]), np.full((5, 2, 4), np.nan)) == ((-1.0, 1.0), 6)  # no replicates
    from calibrate.reports.compare import open_pairs_text
    from calibrate.stats.rank_agreement import RankTau

    row = RankTau(judge_a="a", judge_b="b", n_models=4, tau=1.0, ci=(4 / 6, 1.0), open_pairs=1)
    assert open_pairs_text(row) == "; 1 of 6 model pairs not ordered by the data under one judge or both"
    assert open_pairs_text(RankTau(judge_a="a", judge_b="b", n_models=4, tau=1.0, ci=(1.0, 1.0), open_pairs=0)) == ""


def test_tau_interval_covers_where_the_percentile_interval_of_tau_did_not():
    """Coverage band (stats/rank_agreement_simulation.py, the code `compare --responses` runs): five models 3 PAC
    points apart, judges that agree (true tau 1), 36 calibration pairs per set and 200 benchmark pairs per model.
    The percentile interval of the replicates' tau covered 0.59 here (docs/statistics.md; 6 of these 20
    datasets); the interval from the settled orders must hold it in 18 or more. And it must not cover by being
    the whole range everywhere: five models 10 points apart on 1,000 pairs, it is narrow and still covers."""
    from benchmarks.rank_agreement_study import Situation
    from calibrate.stats import rank_agreement_simulation as ras

    close = ras.run(Situation(5, 3, n_calibration=36, n_pairs=200).study(), 20, 100, seed=11)
    assert close.true_tau == 1.0 and close.tau.count == 20
    assert close.tau.covered >= 18
    apart = ras.run(Situation(5, 10).study(), 20, 100, seed=13)
    assert apart.tau.covered >= 18 and apart.tau.width < 0.5


def test_the_self_preference_interval_covers_and_is_as_wide_as_the_estimates_spread():
    """Coverage band: three models 10 PAC points apart, the first judge reading its own family's (the middle)
    model 15 points kinder than its calibration shows. The interval must hold the true +15 in 24 or more of 30
    datasets and be about as wide as 2 x 1.96 standard deviations of the estimates: one that resampled only the
    benchmark, not the calibration pairs, held it in 22 and was half as wide (0.48)."""
    from benchmarks.rank_agreement_study import Situation
    from calibrate.stats import rank_agreement_simulation as ras

    found = ras.run(Situation(3, 10, agree=False, n_calibration=60, n_pairs=400).study(), 30, 100, seed=12)
    assert found.true_preference == pytest.approx(15.0) and found.preference.count == 30
    assert found.preference.covered >= 24
    assert 0.75 <= found.preference.width_ratio <= 1.35
