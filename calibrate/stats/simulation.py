"""The coverage study: every benchmark estimator calibrate offers, on synthetic judges whose truth is known.

A synthetic judge is a table: for each true class of pair (the four calibration classes, plus truly
mixed pairs, which no calibration set holds) the probability of each judged outcome (alignment score
-2..2 and how many answers it flags as refusals). A scenario adds a benchmark class mix, the
calibration-set size, the benchmark size and optionally an anchor sample (pairs with true labels).
`simulate` draws `replications` independent (calibration, benchmark) samples, all at once with numpy,
computes each estimator and its 95% interval as the package does, and reports bias, mean interval
width and coverage of the true value. docs/statistics.md is this study's table
(`python -m benchmarks.coverage_study`).

The estimators:
- raw: the judge's own mean, interval from resampling the benchmark pairs;
- least_squares / maximum_likelihood: the class-prevalence correction (prevalence.py), interval from
  resampling both the calibration pairs (within each set) and the benchmark pairs;
- mapped_isotonic / mapped_two_point: the score mappings of `calibrate fit` (mapping.py), applied pair
  by pair (PAC only; slow, so only when asked);
- ppi++ / classical: with an anchor sample, the prediction-powered and the labels-only estimate (ppi.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from calibrate.stats import prevalence
from calibrate.stats.benchmark import MIXED_SHARES, mixed_pairs_ranges
from calibrate.stats.mapping import IsotonicMap, TwoPointLinearMap, calibrated_estimate
from calibrate.stats.metrics import expected_values, per_pair_values
from calibrate.stats.ppi import allocate, mean_estimate, small_sample_estimate, sqrt_weights, weighted_estimate
from calibrate.stats.rules import PAIR_CLASSES, SET_TRUTH, adjusted_scores, pair_classes

# The calibration classes, in the order of their sets; "mixed" is a benchmark-only class (true score
# -1, 0 or +1 with equal chance, no refusal).
CALIBRATION_SETS = ("unaligned-0", "aligned-100", "refusal-100", "one-refusal-50")
TRUE_CLASSES = tuple(SET_TRUTH[name].pair_class for name in CALIBRATION_SETS)  # opposed, aligned, both, one
MIXED = "mixed"
MIXED_TRUE_SCORES = (-1.0, 0.0, 1.0)
# A judged outcome: (alignment_score, number of answers flagged as refusals); 15 of them.
OUTCOMES = tuple((score, refusals) for score in (-2, -1, 0, 1, 2) for refusals in (0, 1, 2))
METRICS = ("PAC", "REF")
CLASS_ESTIMATORS = prevalence.ESTIMATORS
MAPPED_ESTIMATORS = ("mapped_isotonic", "mapped_two_point")
ANCHOR_ESTIMATORS = ("ppi++", "ppi++ calibrated", "classical")
MIXED_RANGE_ESTIMATORS = tuple(f"mixed range {share:.0%}" for share in MIXED_SHARES)


def outcome_index(score: int, refusals: int) -> int:
    return OUTCOMES.index((score, refusals))


def _flags() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    score = np.array([s for s, _ in OUTCOMES], dtype=float)
    refusals = np.array([r for _, r in OUTCOMES])
    return score, refusals >= 1, refusals == 2


def outcome_values(rule: str) -> dict[str, np.ndarray]:
    """Per-pair PAC and REF of each judged outcome, and the outcome's adjusted score (the mappings' x)."""
    score, r1, r2 = _flags()
    values = per_pair_values(score, r1, r2, np.zeros_like(r1), np.zeros_like(r1), rule)
    return {"PAC": values["PAC"].to_numpy(), "REF": values["REF"].to_numpy(), "x": adjusted_scores(score, r1, r2, rule)}


def judged_class_matrix() -> np.ndarray:
    """(outcome, judged class) indicator, judged classes in PAIR_CLASSES order."""
    score, r1, r2 = _flags()
    judged = pair_classes(score, r1, r2)
    return (judged[:, None] == np.array(PAIR_CLASSES)[None, :]).astype(float)


def class_values(rule: str) -> dict[str, np.ndarray]:
    """True PAC and REF of each calibration class under the rule (what the shares are weighted by)."""
    expected = [expected_values(name, rule) for name in CALIBRATION_SETS]
    return {metric: np.array([values[metric] for values in expected]) for metric in ("PAC", "REF")}


@dataclass(frozen=True)
class Judge:
    """A synthetic judge: for each true class, probabilities over OUTCOMES."""

    name: str
    behaviour: dict[str, tuple[float, ...]]
    description: str = ""

    def probabilities(self, cls: str) -> np.ndarray:
        p = np.asarray(self.behaviour[cls], dtype=float)
        return p / p.sum()


def judge_from(name: str, description: str, **per_class: dict[tuple[int, int], float]) -> Judge:
    """A judge from {(score, refusals): weight} per class; a class left out behaves as MIXED_BEHAVIOUR."""
    behaviour = {}
    for cls in (*TRUE_CLASSES, MIXED):
        table = per_class.get(cls, MIXED_BEHAVIOUR)
        weights = np.zeros(len(OUTCOMES))
        for (score, refusals), weight in table.items():
            weights[outcome_index(score, refusals)] += weight
        behaviour[cls] = tuple(weights / weights.sum())
    return Judge(name, behaviour, description)


# How every synthetic judge reads a truly mixed pair (no calibration set shows it, so this is an
# assumption of the study): spread over the scale, leaning towards "aligned".
MIXED_BEHAVIOUR = {(-2, 0): 0.15, (-1, 0): 0.2, (0, 0): 0.25, (1, 0): 0.2, (2, 0): 0.2}

# The judge of the done-when scenario: calls 40% of opposed pairs aligned and misses 30% of
# one-sided refusals (scoring those pairs aligned); right on aligned and both-refusal pairs.
OVERCALLING = judge_from(
    "over-calling", "calls 40% of opposed pairs aligned, misses 30% of one-sided refusals",
    opposed={(-2, 0): 0.6, (2, 0): 0.4}, aligned={(2, 0): 1.0}, both_refusal={(2, 2): 1.0},
    one_refusal={(0, 1): 0.7, (2, 0): 0.3})
# The bundled heuristic judges as measured on the bundled calibration sample (36 pairs per set, forward
# order): counts of (score, refusals) per set, from `calibrate fit --judge heuristic` / heuristic-strict.
HEURISTIC = judge_from(
    "heuristic", "bundled `heuristic`, as measured on the sample calibration sets",
    opposed={(-2, 0): 32, (0, 0): 3, (2, 0): 1}, aligned={(-2, 0): 8, (0, 0): 1, (2, 0): 27},
    both_refusal={(0, 1): 10, (2, 2): 26}, one_refusal={(-2, 0): 7, (0, 0): 1, (0, 1): 27, (2, 0): 1})
STRICT = judge_from(
    "strict", "bundled `heuristic-strict`, as measured: misses most refusals",
    opposed={(-2, 0): 32, (0, 0): 3, (2, 0): 1}, aligned={(-2, 0): 8, (0, 0): 1, (2, 0): 27},
    both_refusal={(-2, 0): 18, (0, 0): 2, (0, 1): 14, (2, 2): 2},
    one_refusal={(-2, 0): 22, (0, 0): 2, (0, 1): 6, (2, 0): 6})
_NOISE = {outcome: 0.45 / len(OUTCOMES) for outcome in OUTCOMES}
NOISY = judge_from(
    "noisy", "right 55% of the time, otherwise any outcome at random",
    opposed={**_NOISE, (-2, 0): 0.55 + _NOISE[(-2, 0)]}, aligned={**_NOISE, (2, 0): 0.55 + _NOISE[(2, 0)]},
    both_refusal={**_NOISE, (2, 2): 0.55 + _NOISE[(2, 2)]}, one_refusal={**_NOISE, (0, 1): 0.55 + _NOISE[(0, 1)]})
JUDGES = (OVERCALLING, HEURISTIC, STRICT, NOISY)
# A judge that never recognises one-sided refusals: it reads them as opposed answers, as it reads opposed ones.
BLIND = judge_from(
    "blind", "bundled `heuristic`, but reads every one-refusal pair as opposed",
    opposed={(-2, 0): 32, (0, 0): 3, (2, 0): 1}, aligned={(-2, 0): 8, (0, 0): 1, (2, 0): 27},
    both_refusal={(0, 1): 10, (2, 2): 26}, one_refusal={(-2, 0): 33, (0, 0): 2, (2, 0): 1})
# The over-calling judge as it behaves on harder benchmark answers than the calibration sets' (the
# transport failure of the issue): calls 60% of opposed pairs aligned and misses half the one-sided refusals.
HARDER = judge_from(
    "over-calling, harder on the benchmark", "calls 60% of opposed pairs aligned, misses 50% of one-sided refusals",
    opposed={(-2, 0): 0.4, (2, 0): 0.6}, aligned={(2, 0): 0.9, (-2, 0): 0.1}, both_refusal={(2, 2): 1.0},
    one_refusal={(0, 1): 0.5, (2, 0): 0.5}, mixed={(-2, 0): 0.4, (2, 0): 0.6})

# Benchmark mixes over (opposed, aligned, both_refusal, one_refusal, mixed).
MIXES: dict[str, dict[str, float]] = {
    "calibration mix": {"opposed": 0.25, "aligned": 0.25, "both_refusal": 0.25, "one_refusal": 0.25},
    "40/30/15/15": {"opposed": 0.4, "aligned": 0.3, "both_refusal": 0.15, "one_refusal": 0.15},
    "50/50 opposed/aligned": {"opposed": 0.5, "aligned": 0.5},
    "refusal-heavy": {"opposed": 0.2, "aligned": 0.2, "both_refusal": 0.3, "one_refusal": 0.3},
    "all aligned": {"aligned": 1.0},
    "20% mixed": {"opposed": 0.32, "aligned": 0.24, "both_refusal": 0.12, "one_refusal": 0.12, MIXED: 0.2},
}


def with_mixed_share(mix: dict[str, float], share: float) -> dict[str, float]:
    """The mix with a share of truly mixed pairs, the other classes scaled down in proportion."""
    return {cls: (1 - share) * value for cls, value in mix.items()} | {MIXED: share}


@dataclass(frozen=True)
class Scenario:
    judge: Judge
    mix: dict[str, float]
    n_calibration: int = 36  # pairs per calibration set
    n_benchmark: int = 500
    n_anchor: int = 0  # benchmark pairs with a true label (a random subset)
    rule: str = "v2"
    mix_name: str = ""
    benchmark_judge: Judge | None = None  # how the judge reads benchmark pairs, when not as calibration pairs
    mixed_scores: tuple[float, ...] = MIXED_TRUE_SCORES  # the true scores of mixed pairs, drawn with equal chance
    selection: str = "random"  # how the n_anchor labelled pairs are drawn: "random" or "stratified" (judged class)
    anchor_judge: Judge | None = None  # labels from this judge (an anchor judge that errs), not the truth

    def shares(self) -> np.ndarray:
        """Benchmark shares over (*TRUE_CLASSES, MIXED)."""
        shares = np.array([self.mix.get(cls, 0.0) for cls in (*TRUE_CLASSES, MIXED)])
        return shares / shares.sum()

    def truth(self) -> dict[str, float]:
        """The benchmark population's true PAC and REF."""
        values = class_values(self.rule)
        shares = self.shares()
        return {metric: float(shares[:-1] @ values[metric] + shares[-1] * mixed_value(metric, self.mixed_scores))
                for metric in METRICS}


    def anchor_truth(self) -> dict[str, float]:
        """The anchor judge's own PAC and REF on the benchmark population (what PPI++ with it estimates)."""
        assert self.anchor_judge is not None
        values = outcome_values(self.rule)
        reading = np.array([self.anchor_judge.probabilities(c) for c in (*TRUE_CLASSES, MIXED)])
        return {metric: float(self.shares() @ reading @ values[metric]) for metric in METRICS}


def mixed_value(metric: str, scores: tuple[float, ...] = MIXED_TRUE_SCORES) -> float:
    return float(np.mean([(s + 2) / 4 * 100 for s in scores])) if metric == "PAC" else 0.0


@dataclass
class Draws:
    """Replications of one scenario: calibration outcome counts [r, set, outcome], benchmark pairs'
    true classes, true per-pair values and judged outcomes [r, pair]."""

    calibration: np.ndarray
    classes: np.ndarray
    outcomes: np.ndarray
    true_values: dict[str, np.ndarray] = field(default_factory=dict)


def draw(scenario: Scenario, replications: int, rng: np.random.Generator) -> Draws:
    judge = scenario.judge
    calibration = rng.multinomial(scenario.n_calibration, np.array([judge.probabilities(c) for c in TRUE_CLASSES]),
                                  size=(replications, len(TRUE_CLASSES)))
    all_classes = (*TRUE_CLASSES, MIXED)
    classes = rng.choice(len(all_classes), size=(replications, scenario.n_benchmark), p=scenario.shares())
    reader = scenario.benchmark_judge or judge
    cumulative = np.cumsum([reader.probabilities(c) for c in all_classes], axis=1)
    cumulative[:, -1] = 1.0
    outcomes = (rng.random(classes.shape)[..., None] > cumulative[classes]).sum(axis=-1)
    values = class_values(scenario.rule)
    mixed = classes == len(TRUE_CLASSES)
    true_pac = np.where(mixed, (rng.choice(scenario.mixed_scores, size=classes.shape) + 2) / 4 * 100,
                        np.append(values["PAC"], 0.0)[classes])
    true_ref = np.append(values["REF"], 0.0)[classes]
    return Draws(calibration, classes, outcomes, {"PAC": true_pac, "REF": true_ref})


def outcome_counts(outcomes: np.ndarray) -> np.ndarray:
    """[r, outcome] counts of per-pair outcomes [r, pair]."""
    return (outcomes[..., None] == np.arange(len(OUTCOMES))).sum(axis=-2)


def raw_estimates(counts: np.ndarray, rule: str, n_boot: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per metric [r, 3]: the judge's mean and its percentile-bootstrap interval (benchmark resampled)."""
    values = outcome_values(rule)
    n = counts.sum(axis=-1, keepdims=True)
    resampled = rng.multinomial(np.broadcast_to(n, (*counts.shape[:-1], n_boot)), np.expand_dims(counts / n, -2))
    out = {}
    for metric in METRICS:
        draws = resampled @ values[metric] / n
        low, high = np.percentile(draws, [2.5, 97.5], axis=-1)
        out[metric] = np.stack([counts @ values[metric] / n[..., 0], low, high], axis=-1)
    return out


def class_estimates(estimator: str, calibration_counts: np.ndarray, judged_counts: np.ndarray, rule: str,
                    n_boot: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per metric [r, 3]: the class-corrected value and its percentile-bootstrap interval, as `calibrate
    score` computes it (prevalence.corrected_metrics: where the judge confuses two classes, the identified
    set and no value); also "near_singular" [r] and "withheld" [r, metric]."""
    values = np.stack([class_values(rule)[metric] for metric in METRICS], axis=-1)
    rows = [prevalence.corrected_metrics(estimator, counts, judged, values, TRUE_CLASSES, n_boot, rng)
            for counts, judged in zip(calibration_counts, judged_counts, strict=True)]
    singular = prevalence.smallest_singular(prevalence.confusion_from_counts(calibration_counts))
    out: dict[str, np.ndarray] = {"near_singular": singular < prevalence.NEAR_SINGULAR,
                                  "withheld": np.array([~row["identified"] for row in rows])}
    for i, metric in enumerate(METRICS):
        out[metric] = np.array([(row["value"][i], row["low"][i], row["high"][i]) for row in rows])
    return out


def mixed_range_estimates(calibration_counts: np.ndarray, judged_counts: np.ndarray, rule: str, n_boot: int,
                          rng: np.random.Generator) -> dict[str, dict[str, np.ndarray]]:
    """Per share of MIXED_SHARES and metric [r, 3]: the class-corrected value with the range `calibrate score`
    records for that share of truly mixed pairs read in any way (benchmark.mixed_pairs_ranges)."""
    values = np.stack([class_values(rule)[metric] for metric in METRICS], axis=-1)
    out: dict[str, dict[str, list]] = {f"mixed range {share:.0%}": {m: [] for m in METRICS} for share in MIXED_SHARES}
    for counts, judged in zip(calibration_counts, judged_counts, strict=True):
        found = prevalence.corrected_metrics("least_squares", counts, judged, values, TRUE_CLASSES, n_boot, rng)
        pooled = prevalence.merged_counts(counts, found["groups"])
        for row in mixed_pairs_ranges(pooled, judged, found["groups"], values, METRICS, rule, n_boot, rng):
            for i, metric in enumerate(METRICS):
                out[f"mixed range {row.share:.0%}"][metric].append((found["value"][i], *row.ranges[metric]))
    return {name: {m: np.array(rows, dtype=float) for m, rows in by_metric.items()} for name, by_metric in out.items()}


def calibrated_predictions(calibration_counts: np.ndarray, judged_counts: np.ndarray,
                           rule: str) -> dict[str, np.ndarray]:
    """Per metric [r, outcome]: E[metric | the outcome's judged class] from each replication's calibration
    counts and estimated shares (what `calibrate score` gives PPI++ as "ppi++ calibrated"); the outcome's
    raw value where no calibration pair was judged in its class."""
    values = np.stack([class_values(rule)[metric] for metric in METRICS], axis=-1)
    judged = judged_class_matrix()
    raw = outcome_values(rule)
    out = {metric: np.empty((len(calibration_counts), len(OUTCOMES))) for metric in METRICS}
    for r, (counts, observed) in enumerate(zip(calibration_counts, judged_counts, strict=True)):
        found = prevalence.corrected_metrics("least_squares", counts, observed, values, TRUE_CLASSES, 1,
                                             np.random.default_rng(0))
        groups = found["groups"]
        expected = prevalence.class_expectations(prevalence.merged_counts(counts, groups), found["shares"],
                                                 np.array([values[g].mean(axis=0) for g in groups]))
        per_outcome = expected[judged.argmax(axis=1)]  # outcome x metric
        for i, metric in enumerate(METRICS):
            out[metric][r] = np.where(np.isnan(per_outcome[:, i]), raw[metric], per_outcome[:, i])
    return out


def anchor_estimates(scenario: Scenario, sample: Draws,
                     methods: tuple[str, ...] = ANCHOR_ESTIMATORS) -> dict[str, dict[str, np.ndarray]]:
    """PPI++ (on raw or calibrated predictions) and / or classical per metric and replication. Random
    selection labels the first n_anchor pairs (a random subset, since pairs are drawn independently), with
    the estimators `calibrate score` uses for equal chances; stratified selection draws them by the judge's
    judged class (square-root allocation, as `annotate --select stratified`) and weights by the inclusion
    probabilities (ppi.weighted_estimate). With an anchor judge, the labels are its reading of the pairs."""
    values = outcome_values(scenario.rule)
    judged = judged_class_matrix()
    calibrated = (calibrated_predictions(sample.calibration @ judged, outcome_counts(sample.outcomes) @ judged,
                                         scenario.rule) if "ppi++ calibrated" in methods else {})
    n = scenario.n_anchor
    labels = sample.true_values
    if scenario.anchor_judge is not None:  # the anchor judge reads every pair; only the labelled ones are used
        rng = np.random.default_rng(len(sample.outcomes))
        cumulative = np.cumsum([scenario.anchor_judge.probabilities(c) for c in (*TRUE_CLASSES, MIXED)], axis=1)
        cumulative[:, -1] = 1.0
        read = (rng.random(sample.classes.shape)[..., None] > cumulative[sample.classes]).sum(axis=-1)
        labels = {metric: values[metric][read] for metric in METRICS}
    chosen, probability = _selections(scenario, sample, judged)
    out: dict[str, dict[str, np.ndarray]] = {}
    for method in methods:
        out[method] = {}
        for metric in METRICS:
            rows = []
            for r in range(sample.outcomes.shape[0]):
                table = calibrated[metric][r] if method == "ppi++ calibrated" else values[metric]
                pred = table[sample.outcomes[r]]
                truth = labels[metric][r]
                if scenario.selection == "stratified":
                    picked = chosen[r]
                    result = weighted_estimate(truth[picked], pred[picked], probability[r], pred,
                                               lam=0.0 if method == "classical" else None,
                                               small_sample=method == "ppi++ calibrated")
                elif method == "ppi++ calibrated":
                    result = small_sample_estimate(truth[:n], pred[:n], pred[n:])
                else:
                    result = mean_estimate(truth[:n], pred[:n], pred[n:], method)
                rows.append((result["estimate"], result["ci_low"], result["ci_high"]))
            out[method][metric] = np.array(rows, dtype=float)
    return out


def _selections(scenario: Scenario, sample: Draws, judged: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per replication, the labelled pairs and their inclusion probabilities of a stratified selection by the
    judge's judged class (none for random selection, which labels the first n_anchor pairs)."""
    if scenario.selection != "stratified":
        return [], []
    rng = np.random.default_rng(scenario.n_anchor)
    chosen, probability = [], []
    for outcomes in sample.outcomes:
        keys = [str(k) for k in judged[outcomes].argmax(axis=1)]
        sizes = {key: keys.count(key) for key in dict.fromkeys(keys)}
        counts = allocate(sizes, sqrt_weights(keys), scenario.n_anchor)
        stratum = np.array(keys)
        picked = np.concatenate([rng.choice(np.flatnonzero(stratum == key), size=counts[key], replace=False)
                                 for key in sizes])
        chosen.append(picked)
        probability.append(np.array([counts[keys[i]] / sizes[keys[i]] for i in picked]))
    return chosen, probability


def mapped_estimates(scenario: Scenario, sample: Draws, n_boot: int, seed: int) -> dict[str, dict[str, np.ndarray]]:
    """PAC after the fitted score mapping (isotonic, two-point), calibration and benchmark resampled
    (mapping.calibrated_estimate, one replication at a time)."""
    x_of = outcome_values(scenario.rule)["x"]
    y_of = np.array([SET_TRUTH[name].adjusted_score(scenario.rule) for name in CALIBRATION_SETS])
    out = {}
    for name, mapping in (("mapped_isotonic", IsotonicMap()), ("mapped_two_point", TwoPointLinearMap())):
        rows = []
        for r, counts in enumerate(sample.calibration):
            x = np.repeat(np.tile(x_of, len(CALIBRATION_SETS)), counts.ravel())
            sets = np.repeat(np.array(CALIBRATION_SETS), counts.sum(axis=1))
            y = np.repeat(y_of, counts.sum(axis=1))
            result = calibrated_estimate(mapping, x, y, sets, x_of[sample.outcomes[r]], n_boot=n_boot, seed=seed + r)
            rows.append((result["value"], *result["ci"]))
        out[name] = {"PAC": np.array(rows, dtype=float)}
    return out


def simulate(scenario: Scenario, replications: int, n_boot: int = 400, seed: int = 0,
             estimators: tuple[str, ...] | None = None,
             truth: dict[str, float] | None = None) -> dict[str, dict[str, dict[str, float]]]:
    """{estimator: {metric: {"mean", "bias", "width", "coverage", "near_singular"}}} over the replications.

    `estimators` limits the work (default: raw, both class corrections, and with an anchor PPI++ and
    classical; the mapped ones only when named). `truth`: what bias and coverage are measured against
    (default the scenario's true values; e.g. an anchor judge's own metric, `Scenario.anchor_truth`)."""
    if estimators is None:
        estimators = ("raw", *CLASS_ESTIMATORS, *(ANCHOR_ESTIMATORS if scenario.n_anchor else ()))
    rng = np.random.default_rng(seed)
    sample = draw(scenario, replications, rng)
    counts = outcome_counts(sample.outcomes)
    judged = judged_class_matrix()
    results: dict[str, dict[str, np.ndarray]] = {}
    if "raw" in estimators:
        results["raw"] = raw_estimates(counts, scenario.rule, n_boot, rng)
    for estimator in CLASS_ESTIMATORS:
        if estimator in estimators:
            results[estimator] = class_estimates(estimator, sample.calibration @ judged, counts @ judged, scenario.rule,
                                                 n_boot, rng)
    if any(name in estimators for name in MIXED_RANGE_ESTIMATORS):
        results.update({name: entry for name, entry in mixed_range_estimates(
            sample.calibration @ judged, counts @ judged, scenario.rule, n_boot, rng).items() if name in estimators})
    anchored = tuple(name for name in ANCHOR_ESTIMATORS if name in estimators)
    if anchored:
        results.update(anchor_estimates(scenario, sample, anchored))
    if any(name in estimators for name in MAPPED_ESTIMATORS):
        results.update({k: v for k, v in mapped_estimates(scenario, sample, n_boot, seed).items() if k in estimators})
    return summarise(results, truth or scenario.truth())


def summarise(results: dict[str, dict[str, np.ndarray]], truth: dict[str, float]) -> dict:
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for estimator, by_metric in results.items():
        summary[estimator] = {}
        for metric in METRICS:
            if metric not in by_metric:
                continue
            value, low, high = by_metric[metric][..., 0], by_metric[metric][..., 1], by_metric[metric][..., 2]
            given = ~np.isnan(value)  # a withheld value (not identified) has an interval but no value
            summary[estimator][metric] = {
                "truth": truth[metric], "mean": float(np.mean(value[given])) if given.any() else float("nan"),
                "bias": float(np.mean(value[given]) - truth[metric]) if given.any() else float("nan"),
                "width": float(np.mean(high - low)), "coverage": float(np.mean((low <= truth[metric] + 1e-9)
                                                                               & (truth[metric] - 1e-9 <= high))),
                "near_singular": float(np.mean(by_metric.get("near_singular", False))),
                "withheld": float(np.mean(~given))}
    return summary

