"""The rank-agreement study: Kendall's tau between two judges' leaderboards and a judge's self-preference, on
synthetic models and judges whose truth is known, computed by the code `compare --responses` runs
(stats/rank_agreement.rank_agreement: joint_draws, replicate_pac, self_preference), not by a copy of it.

The data are the leaderboard study's (stats/leaderboard_simulation.py): every model's pairs on the same pair
ids, in articles of `article_size` pairs, an article effect on the true classes and on each judge's reading;
each judge reads its own calibration sample (the same pair ids for both judges, as `compare` judges the same
calibration pairs) and every model's pairs, through its confusion matrix. A judge may lean towards its own
family: on the benchmark answers of its family's models it reads a share `lean` of the opposed pairs as
aligned, which its calibration (on sets of no family) cannot see; that is what makes two judges' population
leaderboards differ (true tau below 1) and what self-preference measures.

The truth: each judge's population headline PAC of each model is the class correction's limit with infinite
data (the same estimator on the judge's expected calibration counts and expected judged classes); tau's truth
is Kendall's tau between the two judges' population PACs, self-preference's the population difference.
`benchmarks/rank_agreement_study.py` writes the table of docs/statistics.md from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from calibrate.stats import leaderboard_simulation as ls
from calibrate.stats import prevalence
from calibrate.stats import simulation as sim
from calibrate.stats.benchmark import (
    CLUSTER,
    CORRECTION_ESTIMATOR,
    Headline,
    calibration_resamples,
    class_correction,
    headline,
    raw_metrics,
)
from calibrate.stats.leaderboard import Difference
from calibrate.stats.rank_agreement import (
    METRIC,
    JudgeScores,
    RankTau,
    ScoredModel,
    SelfPreference,
    kendall_tau,
    rank_agreement,
)

RULE = ls.RULE
ARTICLE = "article_title"  # the cluster column when articles are resampled
PAIR = "issue_description"  # one value per pair: single pairs resampled
POPULATION = 1e6  # the counts standing for infinite data in the population headline
HEADLINE_BOOT = 2  # the headline's own interval is not read here, only its value
REFUSALS = {"both_refusal": 0.1, "one_refusal": 0.1}  # every model's refusal shares: PAC = 15 + 100 x aligned


def spaced_mixes(n_models: int, gap: float, centre: float = 52.5) -> tuple[dict[str, float], ...]:
    """Class mixes of `n_models` models whose true PAC runs `gap` points apart around `centre` (worst first),
    with the same refusals (REFUSALS): PAC moves with the aligned share."""
    pacs = centre + gap * (np.arange(n_models) - (n_models - 1) / 2)
    aligned = (pacs - 15.0) / 100.0
    if aligned.min() < 0.02 or aligned.max() > 0.78:
        raise ValueError(f"{n_models} models {gap} points apart do not fit between PAC 17 and 93")
    return tuple({"opposed": 0.8 - a, "aligned": float(a), **REFUSALS} for a in aligned)


def leaning(judge: sim.Judge, share: float) -> sim.Judge:
    """The judge reading a further `share` of the opposed pairs as aligned (score +2, no refusal)."""
    opposed = share * np.eye(len(sim.OUTCOMES))[sim.outcome_index(2, 0)] + (1 - share) * judge.probabilities("opposed")
    return sim.Judge(f"{judge.name}, leaning {share:.0%}", {**judge.behaviour, "opposed": tuple(opposed)})


@dataclass(frozen=True)
class SimulatedJudge:
    """A synthetic judge of a family (or none), and how far it leans towards its own family's answers."""

    name: str
    reading: sim.Judge
    family: str | None = None
    lean: float = 0.0


@dataclass(frozen=True)
class Study:
    """One situation: the models (class mixes and families) on `n_pairs` shared pair ids, two judges, the
    calibration size per set, articles of `article_size` pairs with an article effect on the truth and on the
    judges' reading, and whether the comparison resamples articles (`clustered`) or single pairs."""

    mixes: tuple[dict[str, float], ...]
    judges: tuple[SimulatedJudge, SimulatedJudge]
    families: tuple[str | None, ...] = ()
    n_pairs: int = 1000
    n_calibration: int = 100
    article_size: int = 10
    article_share: float = 0.0
    judge_article_share: float = 0.0
    clustered: bool = True

    def family(self, m: int) -> str | None:
        return self.families[m] if m < len(self.families) else None

    def benchmark_reading(self, judge: SimulatedJudge, m: int) -> sim.Judge:
        """How the judge reads model m's benchmark answers: as calibration pairs, or leaning if its own."""
        own = judge.family is not None and self.family(m) == judge.family
        return leaning(judge.reading, judge.lean) if own and judge.lean else judge.reading

    def population_pac(self) -> dict[str, np.ndarray]:
        """Each judge's headline PAC of each model with infinite data (the class correction's limit)."""
        return {judge.name: np.array([_population_headline(judge.reading, self.benchmark_reading(judge, m), mix)
                                      for m, mix in enumerate(self.mixes)]) for judge in self.judges}

    def true_tau(self) -> float:
        a, b = self.population_pac().values()
        return float(kendall_tau(a, b))

    def true_preference(self) -> float | None:
        """The first judge's population PAC of its own family's models minus the second's (the mean over
        them); None when it has no models of its family."""
        first, second = self.judges
        own = [m for m in range(len(self.mixes)) if first.family is not None and self.family(m) == first.family]
        if not own:
            return None
        pac = self.population_pac()
        return float(np.mean(pac[first.name][own] - pac[second.name][own]))


def lean_for(study: Study, points: float) -> float:
    """The lean by which the first judge lifts its own family's models `points` PAC points (the shift is
    linear in the lean while the shares stay inside the simplex: measured at a lean of 0.1 and scaled)."""
    first, second = study.judges
    probe = 0.1
    before = study.true_preference()
    after = replace(study, judges=(replace(first, lean=probe), second)).true_preference()
    assert before is not None and after is not None, "the first judge has models of its family"
    return points * probe / (after - before)


def _confusion(judge: sim.Judge) -> np.ndarray:
    """P(judged class | true class), the calibration classes by judged classes (PAIR_CLASSES order)."""
    return np.array([judge.probabilities(cls) for cls in sim.TRUE_CLASSES]) @ sim.judged_class_matrix()


def _population_headline(calibration: sim.Judge, benchmark: sim.Judge, mix: dict[str, float]) -> float:
    """The class correction (its estimator, pooling and identified value) on expected counts."""
    counts = POPULATION * _confusion(calibration)
    groups = prevalence.confused_groups(prevalence.confused_classes(counts, sim.TRUE_CLASSES), sim.TRUE_CLASSES)
    shares = np.array([mix.get(cls, 0.0) for cls in sim.TRUE_CLASSES])
    observed = POPULATION * (shares / shares.sum()) @ _confusion(benchmark)
    estimated = prevalence.estimate_shares(CORRECTION_ESTIMATOR, prevalence.merged_counts(counts, groups), observed)
    class_pac = sim.class_values(RULE)[METRIC]
    return float(estimated @ np.array([class_pac[g].min() for g in groups]))


# --------------------------------------------------------------------------- one replication


@dataclass(frozen=True)
class _Model:
    headline: dict[str, Headline]


@dataclass(frozen=True)
class _Score:
    """What rank_agreement reads of a judge's score record: the headline per model, no paired differences."""

    models: Mapping[str, _Model]
    differences: list[Difference] | None = None


@dataclass
class Replication:
    """What one replication found: tau between the two judges, the first judge's self-preference (if any)."""

    tau: RankTau
    preference: SelfPreference | None


def _calibration_rows(judge: sim.Judge, n: int, rng: np.random.Generator) -> pd.DataFrame:
    frames = []
    for set_name, cls in zip(sim.CALIBRATION_SETS, sim.TRUE_CLASSES, strict=True):
        outcomes = rng.choice(len(sim.OUTCOMES), size=n, p=judge.probabilities(cls))
        frames.append(pd.DataFrame({"pair_id": np.arange(n), "set_name": set_name, "parse_status": "ok",
                                    **ls.outcome_rows(outcomes)}))
    return pd.concat(frames, ignore_index=True)


def replicate(study: Study, rng: np.random.Generator, n_boot: int) -> Replication:
    """One replication: both judges' calibration and benchmark judgments drawn, each model's headline made as
    `score` makes it, and the leaderboards compared as `compare --responses` compares them."""
    article = np.arange(study.n_pairs) // study.article_size
    truth_uniform = ls.dependent_uniforms(rng, article, study.article_share)
    classes = [ls.true_classes_of(mix, truth_uniform) for mix in study.mixes]
    names = [f"model-{m + 1}" for m in range(len(study.mixes))]
    judges = []
    for judge in study.judges:
        calibration = _calibration_rows(judge.reading, study.n_calibration, rng)
        resamples = calibration_resamples(calibration, None, HEADLINE_BOOT, 0)
        rows, models = {}, {}
        for m, name in enumerate(names):
            outcomes = ls.judged_outcomes(study.benchmark_reading(judge, m), classes[m],
                                ls.dependent_uniforms(rng, article, study.judge_article_share))
            table = pd.DataFrame({"pair_id": np.arange(study.n_pairs), "parse_status": "ok", "order": "forward",
                                  "value_preference": None, **ls.outcome_rows(outcomes)})
            if study.clustered:
                table[CLUSTER] = article.astype(np.int64)
            rows[name] = table
            corrected = class_correction(calibration, table, RULE, HEADLINE_BOOT, resamples=resamples,
                                         mixed_pairs=False)
            models[name] = _Model(headline(raw_metrics(table, RULE, HEADLINE_BOOT), corrected, None))
        judges.append(JudgeScores(judge.name, judge.family, calibration, rows, _Score(models)))
    column = ARTICLE if study.clustered else PAIR
    clusters = {name: pd.DataFrame({"pair_id": np.arange(study.n_pairs),
                                    column: article if study.clustered else np.arange(study.n_pairs)})
                for name in names}
    scored = {name: ScoredModel(source=name, model_id=name, family=study.family(m)) for m, name in enumerate(names)}
    agreement, preferences = rank_agreement(judges, scored, clusters, column, RULE, n_boot,
                                            int(rng.integers(2 ** 31)))
    first = study.judges[0].name
    return Replication(agreement.tau[0], preferences[first][0] if preferences.get(first) else None)


# --------------------------------------------------------------------------- coverage


@dataclass
class Coverage:
    """Coverage of one interval over replications: how many held the truth, of how many, the mean width, and
    the spread of the point estimates (what a 95% interval's width should be about 3.92 times)."""

    covered: int = 0
    count: int = 0
    widths: list[float] = field(default_factory=list)
    estimates: list[float] = field(default_factory=list)

    def add(self, estimate: float | None, ci: tuple[float | None, float | None], truth: float) -> None:
        low, high = ci
        if estimate is None or low is None or high is None:
            return
        self.count += 1
        self.covered += int(low - 1e-9 <= truth <= high + 1e-9)
        self.widths.append(high - low)
        self.estimates.append(estimate)

    @property
    def rate(self) -> float:
        return self.covered / self.count if self.count else float("nan")

    @property
    def uncertainty(self) -> float:
        """The binomial standard error of the rate."""
        return float(np.sqrt(self.rate * (1 - self.rate) / self.count)) if self.count else float("nan")

    @property
    def width(self) -> float:
        return float(np.mean(self.widths)) if self.widths else float("nan")

    @property
    def width_ratio(self) -> float:
        """The mean width over 2 x 1.96 standard deviations of the estimates: about 1 for a right-sized
        interval of a normal estimate."""
        return self.width / (2 * 1.96 * float(np.std(self.estimates))) if len(self.estimates) > 1 else float("nan")


@dataclass
class Result:
    """A situation's truth and what the replications found: tau's and self-preference's interval coverage, and
    the share of replications whose point tau was the true one."""

    true_tau: float
    true_preference: float | None
    tau: Coverage
    preference: Coverage
    tau_exact: float


def run(study: Study, replications: int, n_boot: int, seed: int = 0) -> Result:
    """Coverage and mean width of tau's and the self-preference's 95% intervals over `replications`."""
    rng = np.random.default_rng(seed)
    true_tau, true_preference = study.true_tau(), study.true_preference()
    tau, preference, exact = Coverage(), Coverage(), []
    for _ in range(replications):
        found = replicate(study, rng, n_boot)
        tau.add(found.tau.tau, found.tau.ci, true_tau)
        exact.append(found.tau.tau is not None and abs(found.tau.tau - true_tau) < 1e-9)
        if found.preference is not None and true_preference is not None:
            preference.add(found.preference.difference, found.preference.ci, true_preference)
    return Result(true_tau, true_preference, tau, preference, float(np.mean(exact)))
