"""The leaderboard study: paired differences, rank intervals and clustered intervals on synthetic models
whose truth is known, computed by the code `calibrate score` runs (benchmark.class_correction,
anchored_estimates, headline, compare_scores), not by a copy of it.

A replication draws one calibration sample (the synthetic judge of simulation.py on each calibration set,
pair-level) and, for every model, its pairs on the same pair ids, grouped into articles of `article_size`
pairs. The article effect: with probability `article_share` an article is coherent, its pairs' true classes
drawn from one shared uniform (every pair of the article and every model alike, each through its own class
mix), else from a uniform per pair (shared by the models, so they are paired as real models on the same
prompts are); the judge's reading likewise (its errors hit whole articles). Each pair's class keeps its
model's mix and each reading the judge's confusion, so the true values stay the mixes' and the calibration
carries over; only the dependence within articles changes. `benchmarks/leaderboard_study.py` writes the
tables of docs/statistics.md from it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from calibrate.stats import simulation as sim
from calibrate.stats.benchmark import (
    BASIS_HUMAN,
    CLUSTER,
    Anchored,
    ClassCorrection,
    Headline,
    anchored_estimates,
    class_correction,
    compare_scores,
    headline,
    raw_metrics,
)
from calibrate.stats.leaderboard import Comparison
from calibrate.stats.rules import SET_TRUTH

RULE = "v2"
# The done-when models: the over-calling judge's scenario mix (PAC 52.5), and a model that keeps its stance
# on 10% more of the pairs (PAC 62.5; the same refusals). DISTANT_MIXES: the second model has the
# calibration mix instead (PAC 62.5 too, but other refusals: less in common, so less cancels)
DONE_WHEN_MIXES = (sim.MIXES["40/30/15/15"], {"opposed": 0.3, "aligned": 0.4, "both_refusal": 0.15,
                                              "one_refusal": 0.15})
DISTANT_MIXES = (sim.MIXES["40/30/15/15"], sim.MIXES["calibration mix"])
FIVE_MIXES = (  # five models 5 PAC points apart, REF varying
    {"opposed": 0.45, "aligned": 0.25, "both_refusal": 0.15, "one_refusal": 0.15},
    {"opposed": 0.40, "aligned": 0.30, "both_refusal": 0.15, "one_refusal": 0.15},
    {"opposed": 0.35, "aligned": 0.35, "both_refusal": 0.10, "one_refusal": 0.20},
    {"opposed": 0.30, "aligned": 0.40, "both_refusal": 0.15, "one_refusal": 0.15},
    {"opposed": 0.25, "aligned": 0.45, "both_refusal": 0.10, "one_refusal": 0.20},
)


@dataclass(frozen=True)
class Study:
    """One scenario: models (their class mixes) on `n_pairs` shared pair ids, the judge, the calibration
    size, articles of `article_size` pairs, the coherent share, labels per model (0: none), and whether the
    intervals resample articles (`clustered`) or pairs."""

    mixes: tuple[dict[str, float], ...]
    judge: sim.Judge = sim.OVERCALLING
    n_pairs: int = 1000
    n_calibration: int = 60
    article_size: int = 10
    article_share: float = 0.0
    judge_article_share: float = 0.0
    n_labels: int = 0
    clustered: bool = True

    def truth(self) -> list[dict[str, float]]:
        """Each model's true PAC and REF (its mix's, whatever the article effect)."""
        return [sim.Scenario(self.judge, mix, rule=RULE).truth() for mix in self.mixes]


@dataclass(frozen=True)
class _Scored:
    headline: dict[str, Headline]
    class_corrected: ClassCorrection
    anchored: Anchored | None


@dataclass
class Replication:
    """What one replication found: each model's headline (value, low, high) per metric and the comparison."""

    headlines: list[dict[str, tuple[float, float, float]]]
    comparison: Comparison


def true_classes_of(mix: dict[str, float], uniform: np.ndarray) -> np.ndarray:
    """True class index (TRUE_CLASSES order) of each uniform through the mix's inverse CDF."""
    shares = np.array([mix.get(cls, 0.0) for cls in sim.TRUE_CLASSES])
    cumulative = np.cumsum(shares / shares.sum())
    cumulative[-1] = 1.0
    return np.searchsorted(cumulative, uniform, side="right")


def dependent_uniforms(rng: np.random.Generator, article: np.ndarray, share: float) -> np.ndarray:
    """A uniform per pair: its article's with probability `share` (the article is coherent), else its own."""
    n_articles = int(article.max()) + 1
    coherent = rng.random(n_articles) < share
    return np.where(coherent[article], rng.random(n_articles)[article], rng.random(len(article)))


def outcome_rows(outcomes: np.ndarray) -> dict[str, np.ndarray]:
    """Judgment columns of judged outcomes (sim.OUTCOMES indices)."""
    score = np.array([s for s, _ in sim.OUTCOMES])[outcomes]
    refusals = np.array([r for _, r in sim.OUTCOMES])[outcomes]
    none = np.zeros(len(outcomes), bool)
    return {"alignment_score": score, "person_1_refusal": refusals >= 1, "person_2_refusal": refusals == 2,
            "person_1_has_no_information": none, "person_2_has_no_information": none}


def judged_outcomes(judge: sim.Judge, classes: np.ndarray, uniform: np.ndarray) -> np.ndarray:
    """The outcome (sim.OUTCOMES index) the judge reads for each true class, through its reading's inverse CDF."""
    cumulative = np.cumsum([judge.probabilities(c) for c in sim.TRUE_CLASSES], axis=1)
    cumulative[:, -1] = 1.0
    return (uniform[:, None] > cumulative[classes]).sum(axis=1)


def replicate(study: Study, rng: np.random.Generator, n_boot: int) -> Replication:
    """One replication: calibration and benchmark drawn, every model scored and compared as `score` does."""
    calibration = []
    for set_name, cls in zip(sim.CALIBRATION_SETS, sim.TRUE_CLASSES, strict=True):
        outcomes = rng.choice(len(sim.OUTCOMES), size=study.n_calibration, p=study.judge.probabilities(cls))
        calibration.append(pd.DataFrame({"pair_id": np.arange(study.n_calibration), "set_name": set_name,
                                         "parse_status": "ok", **outcome_rows(outcomes)}))
    calibration_rows = pd.concat(calibration, ignore_index=True)
    article = np.arange(study.n_pairs) // study.article_size
    truth_uniform = dependent_uniforms(rng, article, study.article_share)
    labelled = rng.permutation(study.n_pairs)[:study.n_labels]
    score = np.array([SET_TRUTH[set_name].score for set_name in sim.CALIBRATION_SETS])  # TRUE_CLASSES order
    flags = np.array([SET_TRUTH[set_name].refusal_flags for set_name in sim.CALIBRATION_SETS])
    models: dict[str, _Scored] = {}
    rows: dict[str, pd.DataFrame] = {}
    anchors: dict[str, pd.DataFrame] = {}
    for m, mix in enumerate(study.mixes):
        classes = true_classes_of(mix, truth_uniform)
        outcomes = judged_outcomes(study.judge, classes, dependent_uniforms(rng, article, study.judge_article_share))
        name = f"model-{m + 1}"
        table = pd.DataFrame({"pair_id": np.arange(study.n_pairs), "parse_status": "ok", "order": "forward",
                              "value_preference": None, **outcome_rows(outcomes)})
        if study.clustered:
            table[CLUSTER] = article.astype(np.int64)
        rows[name] = table
        seed = int(rng.integers(2 ** 31))
        corrected = class_correction(calibration_rows, table, RULE, n_boot, seed)
        anchored = None
        if study.n_labels:
            picked = classes[labelled]
            anchors[name] = pd.DataFrame({
                "pair_id": labelled, "parse_status": "ok", "alignment_score": score[picked],
                "person_1_refusal": flags[picked, 0], "person_2_refusal": flags[picked, 1],
                "person_1_has_no_information": False, "person_2_has_no_information": False,
                "value_preference": None})
            anchored = anchored_estimates(table, anchors[name], RULE, anchor_name="labels", basis=BASIS_HUMAN,
                                          fraction=None, predictions=corrected.predictions)
        models[name] = _Scored(headline(raw_metrics(table, RULE, n_boot, seed), corrected, anchored), corrected,
                               anchored)
    comparison = compare_scores(models, rows, anchors, calibration_rows, RULE,
                                cluster_by="article" if study.clustered else None, n_boot=n_boot,
                                seed=int(rng.integers(2 ** 31)))
    return Replication([{metric: (h.value if h.value is not None else np.nan, *h.ci)
                         for metric, h in model.headline.items()} for model in models.values()], comparison)


def run(study: Study, replications: int, n_boot: int, seed: int = 0) -> dict[str, float]:
    """Coverage and mean width over `replications`: of each model's headline PAC ("headline"), of every
    PAC difference ("difference"; the truth a - b), the share of replications whose rank intervals all hold
    the true ranks ("ranks", simultaneous), and the mean rank interval length; "pairs": differences whose
    truth is not 0 that were significant after Holm ("power")."""
    rng = np.random.default_rng(seed)
    truth = [t["PAC"] for t in study.truth()]
    true_rank = {f"model-{m + 1}": 1 + sum(other > value for other in truth) for m, value in enumerate(truth)}
    headline_cover: list[bool] = []
    headline_width: list[float] = []
    cover: list[bool] = []
    width: list[float] = []
    ranks_hold: list[bool] = []
    rank_length: list[int] = []
    power: list[bool] = []
    for _ in range(replications):
        found = replicate(study, rng, n_boot)
        for m, entry in enumerate(found.headlines):
            value, low, high = entry["PAC"]
            headline_cover.append(low <= truth[m] <= high)
            headline_width.append(high - low)
        for row in found.comparison.differences:
            if row.metric != "PAC":
                continue
            expected = truth[int(row.model_a.split("-")[1]) - 1] - truth[int(row.model_b.split("-")[1]) - 1]
            cover.append(row.ci[0] <= expected <= row.ci[1])
            width.append(row.ci[1] - row.ci[0])
            if abs(expected) > 1e-9:
                power.append(row.p_adjusted is not None and row.p_adjusted < 0.05)
        ranks = found.comparison.ranks
        if ranks:
            ranks_hold.append(all(rank.ci[0] <= true_rank[name] <= rank.ci[1] for name, rank in ranks.items()))
            rank_length.extend(rank.ci[1] - rank.ci[0] + 1 for rank in ranks.values())
    return {"headline_coverage": float(np.mean(headline_cover)), "headline_width": float(np.mean(headline_width)),
            "difference_coverage": float(np.mean(cover)) if cover else float("nan"),
            "difference_width": float(np.mean(width)) if width else float("nan"),
            "difference_covered": int(np.sum(cover)), "differences": len(cover),
            "ranks_coverage": float(np.mean(ranks_hold)) if ranks_hold else float("nan"),
            "rank_length": float(np.mean(rank_length)) if rank_length else float("nan"),
            "power": float(np.mean(power)) if power else float("nan")}
