"""True class shares of a benchmark from a judge's confusion matrix, vectorised over many problems.

The judge's behaviour on each true class (opposed, aligned, both refuse, one refuses) is measured on
the calibration sets as a confusion matrix C (C[j, t] = P(judged class j | true class t)); on the
benchmark only the judged-class shares o are seen. If the judge behaves on benchmark pairs of each
class as on the calibration pairs of that class, o = C p, and the true shares p follow. Two
estimators of p are offered, both constrained to shares (p >= 0, sum 1):
- least squares (adjusted classify-and-count; Rogan-Gladen with two classes): min |C p - o|^2,
  solved exactly by trying every support set of classes (there are at most 2^4 - 1 = 15);
- maximum likelihood: the multinomial likelihood of the judged-class counts, by EM.
Every function takes a leading batch axis, so a bootstrap (and a coverage study) solves thousands of
problems in one call instead of a Python loop.

The estimate is only as good as C is invertible: when two true classes look alike to the judge,
C is near-singular and small changes of o swing p from one class to the other. `smallest_singular`
measures that; below NEAR_SINGULAR the estimate carries a warning (its bootstrap interval, which
resamples the calibration pairs, is then wide: the coverage study shows it still covers).
"""

from __future__ import annotations

from itertools import combinations
from typing import TypedDict

import numpy as np

ESTIMATORS = ("least_squares", "maximum_likelihood")
NEAR_SINGULAR = 0.1  # smallest singular value of C below which the shares are barely identified (a warning)
RIDGE = 1e-10
EM_ITERATIONS = 1000
EM_TOLERANCE = 1e-7


def confusion_from_counts(counts: np.ndarray) -> np.ndarray:
    """C[..., j, t] from calibration counts[..., t, j] (true x judged); an empty row stays zero."""
    counts = np.asarray(counts, dtype=float)
    totals = counts.sum(axis=-1, keepdims=True)
    rates = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    return np.swapaxes(rates, -1, -2)


def smallest_singular(confusion: np.ndarray) -> np.ndarray:
    """The smallest singular value of each C: 1-ish for a judge that tells every class apart, 0 for one
    that confuses two classes completely (then no data can separate their shares)."""
    return np.linalg.svd(np.asarray(confusion, dtype=float), compute_uv=False)[..., -1]


def least_squares_shares(confusion: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """argmin over shares p of |C p - o|^2 for every problem of the batch.

    The optimum lies on some support S (the classes with p > 0), where it is the equality-constrained
    least-squares solution on S; so every S is solved (its KKT system) and the feasible solution with
    the smallest residual is kept."""
    confusion = np.asarray(confusion, dtype=float)
    observed = np.asarray(observed, dtype=float)
    n_classes = confusion.shape[-1]
    batch = np.broadcast_shapes(confusion.shape[:-2], observed.shape[:-1])
    confusion = np.broadcast_to(confusion, (*batch, *confusion.shape[-2:]))
    observed = np.broadcast_to(observed, (*batch, observed.shape[-1]))
    best = np.full((*batch, n_classes), np.nan)
    best_residual = np.full(batch, np.inf)
    for size in range(1, n_classes + 1):
        for support in combinations(range(n_classes), size):
            columns = confusion[..., list(support)]
            gram = np.swapaxes(columns, -1, -2) @ columns
            kkt = np.zeros((*batch, size + 1, size + 1))
            kkt[..., :size, :size] = 2 * gram + RIDGE * np.eye(size)  # a tiny ridge keeps rank-deficient S solvable
            kkt[..., :size, size] = kkt[..., size, :size] = 1.0
            rhs = np.concatenate([2 * np.einsum("...jk,...j->...k", columns, observed), np.ones((*batch, 1))], axis=-1)
            solution = np.linalg.solve(kkt, rhs[..., None])[..., :size, 0]
            residual = np.sum((np.einsum("...jk,...k->...j", columns, solution) - observed) ** 2, axis=-1)
            feasible = (solution >= -1e-10).all(axis=-1) & (np.abs(solution.sum(axis=-1) - 1) < 1e-6)
            better = feasible & (residual < best_residual - 1e-15)
            shares = np.zeros((*batch, n_classes))
            shares[..., list(support)] = np.clip(solution, 0.0, None)
            best = np.where(better[..., None], shares, best)
            best_residual = np.where(better, residual, best_residual)
    return best / best.sum(axis=-1, keepdims=True)


def maximum_likelihood_shares(confusion: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Shares maximising sum_j n_j log (C p)_j (judged-class counts n), by EM from equal shares.

    Judged classes that no calibration pair produced (a zero row of C) carry no information and are
    left out; EM stops when no share moves more than EM_TOLERANCE (or after EM_ITERATIONS)."""
    confusion = np.asarray(confusion, dtype=float)
    counts = np.asarray(counts, dtype=float)
    batch = np.broadcast_shapes(confusion.shape[:-2], counts.shape[:-1])
    confusion = np.broadcast_to(confusion, (*batch, *confusion.shape[-2:]))
    counts = np.where(confusion.sum(axis=-1) > 0, np.broadcast_to(counts, (*batch, counts.shape[-1])), 0.0)
    total = counts.sum(axis=-1, keepdims=True)
    shares = np.full((*batch, confusion.shape[-1]), 1.0 / confusion.shape[-1])
    active = np.ones(batch, dtype=bool)
    for _ in range(EM_ITERATIONS):
        predicted = np.einsum("...jt,...t->...j", confusion, shares)
        ratio = np.divide(counts, predicted, out=np.zeros_like(counts), where=predicted > 0)
        updated = shares * np.einsum("...jt,...j->...t", confusion, ratio) / np.where(total > 0, total, 1.0)
        moved = np.abs(updated - shares).max(axis=-1) > EM_TOLERANCE
        shares = np.where(active[..., None], updated, shares)
        active &= moved
        if not active.any():
            break
    return shares / shares.sum(axis=-1, keepdims=True)


def estimate_shares(estimator: str, calibration_counts: np.ndarray, judged_counts: np.ndarray) -> np.ndarray:
    """True class shares from calibration counts[..., true, judged] and benchmark judged counts[..., judged]."""
    confusion = confusion_from_counts(calibration_counts)
    judged_counts = np.asarray(judged_counts, dtype=float)
    if estimator == "least_squares":
        return least_squares_shares(confusion, judged_counts / judged_counts.sum(axis=-1, keepdims=True))
    if estimator == "maximum_likelihood":
        return maximum_likelihood_shares(confusion, judged_counts)
    raise ValueError(f"unknown estimator {estimator!r}; use one of {', '.join(ESTIMATORS)}")


def bootstrap_shares(estimator: str, calibration_counts: np.ndarray, judged_counts: np.ndarray, n_boot: int,
                     rng: np.random.Generator, calibration_draws: np.ndarray | None = None,
                     judged_draws: np.ndarray | None = None) -> np.ndarray:
    """Shares re-estimated on n_boot resamples of both samples: each calibration set's pairs within the
    set, and the benchmark pairs; counts[..., true, judged] and [..., judged] give draws[..., n_boot, true].
    (Resampling pairs is drawing multinomial counts over the judged classes.) Draws made otherwise (whole
    clusters resampled, metrics.resampled_totals) are passed as `calibration_draws` / `judged_draws`."""
    if calibration_draws is None:
        calibration_draws = _multinomial(rng, np.asarray(calibration_counts, dtype=float), n_boot, inner_axes=1)
    if judged_draws is None:
        judged_draws = _multinomial(rng, np.asarray(judged_counts, dtype=float), n_boot, inner_axes=0)
    return estimate_shares(estimator, calibration_draws, judged_draws)


def _multinomial(rng: np.random.Generator, counts: np.ndarray, n_boot: int, inner_axes: int) -> np.ndarray:
    """n_boot multinomial resamples of every count vector (last axis); the resample axis goes before the
    last `inner_axes` batch axes (1 for calibration counts[..., true, judged]: [..., n_boot, true, judged])."""
    totals = counts.sum(axis=-1)
    probabilities = np.divide(counts, totals[..., None], out=np.zeros_like(counts), where=totals[..., None] > 0)
    probabilities[..., -1] += totals == 0  # an empty vector stays empty (n = 0) but needs valid probabilities
    position = totals.ndim - inner_axes
    size = (*totals.shape[:position], n_boot, *totals.shape[position:])
    n = np.broadcast_to(np.expand_dims(totals, position), size).astype(np.int64)
    p = np.broadcast_to(np.expand_dims(probabilities, position), (*size, counts.shape[-1]))
    return rng.multinomial(n, p).astype(float)


# --------------------------------------------------------------------------- identification

CONFUSED_DISTANCE = 0.2  # total variation between two true classes' judged-class distributions below which
# the judge is taken not to tell them apart (the study's judges that do: 0.28 and more, even near-singular ones)


def confused_classes(calibration_counts: np.ndarray, classes: tuple[str, ...] | list[str]) -> list[tuple[str, str]]:
    """The pairs of true classes the judge reads alike: their judged-class distributions on the calibration
    sets (counts[true, judged]) lie within CONFUSED_DISTANCE in total variation. No benchmark data can split
    the share of such a pair between its two classes, so estimates that value them differently are not
    identified (only their combined share is)."""
    rates = np.swapaxes(confusion_from_counts(calibration_counts), -1, -2)  # true x judged
    return [(classes[a], classes[b]) for a, b in combinations(range(len(classes)), 2)
            if calibration_counts[a].sum() and calibration_counts[b].sum()
            and 0.5 * np.abs(rates[a] - rates[b]).sum() < CONFUSED_DISTANCE]


def confused_groups(pairs: list[tuple[str, str]], classes: tuple[str, ...] | list[str]) -> list[list[int]]:
    """The classes joined by confused pairs, as groups of class indices (every class in exactly one group)."""
    group = list(range(len(classes)))

    def root(i: int) -> int:
        while group[i] != i:
            i = group[i]
        return i

    for a, b in pairs:
        group[root(classes.index(a))] = root(classes.index(b))
    members: dict[int, list[int]] = {}
    for i in range(len(classes)):
        members.setdefault(root(i), []).append(i)
    return list(members.values())


def merged_counts(calibration_counts: np.ndarray, groups: list[list[int]]) -> np.ndarray:
    """Calibration counts[..., true, judged] with each group's true classes pooled into one."""
    return np.stack([calibration_counts[..., g, :].sum(axis=-2) for g in groups], axis=-2)


def class_expectations(calibration_counts: np.ndarray, shares: np.ndarray, class_values: np.ndarray) -> np.ndarray:
    """E[true value | judged class] (judged x metric): Bayes' rule with the confusion matrix
    (counts[true, judged]) and the benchmark's true shares; NaN for a judged class no true class produces.
    The calibrated prediction of a pair, which PPI++ may use in place of the judge's raw value."""
    confusion = confusion_from_counts(calibration_counts)  # judged x true
    joint = confusion * np.asarray(shares, dtype=float)[None, :]
    total = joint.sum(axis=1, keepdims=True)
    posterior = np.divide(joint, total, out=np.full_like(joint, np.nan), where=total > 0)
    return posterior @ np.asarray(class_values, dtype=float)


class CorrectedMetrics(TypedDict):
    """What `corrected_metrics` returns: per metric "value", "low", "high", "identified"; per group of
    confused classes "shares", "share_low", "share_high"; "groups" (class indices per group)."""

    value: np.ndarray
    low: np.ndarray
    high: np.ndarray
    identified: np.ndarray
    shares: np.ndarray
    share_low: np.ndarray
    share_high: np.ndarray
    groups: list[list[int]]


def corrected_metrics(estimator: str, calibration_counts: np.ndarray, judged_counts: np.ndarray,
                      class_values: np.ndarray, classes: tuple[str, ...] | list[str], n_boot: int,
                      rng: np.random.Generator, calibration_draws: np.ndarray | None = None,
                      judged_draws: np.ndarray | None = None) -> CorrectedMetrics:
    """Class-corrected metrics of one benchmark (class_values[true, metric]) with 95% percentile intervals,
    honest about identification: the true classes the judge confuses (`confused_classes`) are pooled, so
    only their combined share is estimated; a metric that values a pooled group's classes alike is still
    point-identified, any other gets the identified set (every split of the group's share) as its interval,
    widened by the bootstrap (lower bound's 2.5%, upper bound's 97.5% percentile), and no value (NaN).
    `calibration_draws` [n_boot, true, judged] / `judged_draws` [n_boot, judged]: resamples made by the caller
    (clusters, bootstrap_shares). Returns them as a `CorrectedMetrics`."""
    groups = confused_groups(confused_classes(calibration_counts, classes), classes)
    pooled = merged_counts(np.asarray(calibration_counts, dtype=float), groups)
    values = np.asarray(class_values, dtype=float)
    lowest = np.array([values[g].min(axis=0) for g in groups])  # group x metric
    highest = np.array([values[g].max(axis=0) for g in groups])
    shares = estimate_shares(estimator, pooled, judged_counts)
    draws = bootstrap_shares(estimator, pooled, judged_counts, n_boot, rng,
                             None if calibration_draws is None else merged_counts(calibration_draws, groups),
                             judged_draws)
    identified = np.isclose(lowest, highest).all(axis=0)
    low = np.percentile(draws @ lowest, 2.5, axis=0)
    high = np.percentile(draws @ highest, 97.5, axis=0)
    return {"value": np.where(identified, shares @ lowest, np.nan), "low": low, "high": high,
            "identified": identified, "shares": shares, "share_low": np.percentile(draws, 2.5, axis=0),
            "share_high": np.percentile(draws, 97.5, axis=0), "groups": groups}



# --------------------------------------------------------------------------- truly mixed pairs


def unconstrained_values(calibration_counts: np.ndarray, judged_counts: np.ndarray,
                         class_values: np.ndarray) -> np.ndarray:
    """v . p for p the least-squares shares without the positivity constraint (only sum 1): affine in the
    observed shares, so its bootstrap spread is not narrowed by shares clipped at 0 as the headline's can be;
    batched over leading axes of counts[..., true, judged] and judged_counts[..., judged] -> [..., metric]."""
    confusion = confusion_from_counts(calibration_counts)  # ... judged x true
    judged_counts = np.asarray(judged_counts, dtype=float)
    observed = judged_counts / judged_counts.sum(axis=-1, keepdims=True)
    n_true = confusion.shape[-1]
    batch = np.broadcast_shapes(confusion.shape[:-2], observed.shape[:-1])
    kkt = np.zeros((*batch, n_true + 1, n_true + 1))
    kkt[..., :n_true, :n_true] = 2 * np.swapaxes(confusion, -1, -2) @ confusion + RIDGE * np.eye(n_true)
    kkt[..., :n_true, n_true] = kkt[..., n_true, :n_true] = 1.0
    rhs = np.concatenate([2 * np.einsum("...jt,...j->...t", confusion, observed), np.ones((*batch, 1))], axis=-1)
    shares = np.linalg.solve(kkt, rhs[..., None])[..., :n_true, 0]
    return shares @ np.asarray(class_values, dtype=float)


def mixed_share_range(calibration_counts: np.ndarray, observed: np.ndarray, lowest: np.ndarray, highest: np.ndarray,
                      share: float, mixed_low: float, mixed_high: float) -> tuple[float, float]:
    """The lowest and highest true value of a metric consistent with the judged-class shares `observed` when
    at most a `share` of the pairs is truly mixed (true value mixed_low..mixed_high) and the judge reads those
    in any way: the extremes of v . u + mu . sum(r) over the calibration classes' masses u >= 0 and the mixed
    pairs' masses by judged class r >= 0, with C u + r = o, sum(u) + sum(r) = 1 and sum(r) <= share (the
    identified set; docs/statistics.md), two linear programs. Each class's value v runs from `lowest` to
    `highest` (apart for classes the judge confuses, pooled in the counts). A sampled o need not fit exactly:
    the fit's L1 residual is first minimised, then held within its sampling error (1.96 times the summed
    standard errors of the judged-class shares) of that minimum."""
    from scipy.optimize import linprog

    confusion = confusion_from_counts(calibration_counts)  # judged x true
    n_judged, n_true = confusion.shape
    o = np.asarray(observed, dtype=float) / np.sum(observed)
    size = n_true + 3 * n_judged  # u (true), r (judged), residual+ (judged), residual- (judged)
    equalities = np.zeros((n_judged + 1, size))
    equalities[:n_judged, :n_true] = confusion
    equalities[:n_judged, n_true:] = np.hstack([np.eye(n_judged), np.eye(n_judged), -np.eye(n_judged)])
    equalities[n_judged, :n_true + n_judged] = 1.0
    targets = np.append(o, 1.0)
    residual = np.concatenate([np.zeros(n_true + n_judged), np.ones(2 * n_judged)])
    mixed_mass = np.concatenate([np.zeros(n_true), np.ones(n_judged), np.zeros(2 * n_judged)])
    fit = linprog(residual, A_ub=mixed_mass[None, :], b_ub=[share], A_eq=equalities, b_eq=targets, bounds=(0, None),
                  method="highs")
    slack = 1.96 * np.sum(np.sqrt(o * (1 - o) / np.sum(observed)))  # the L1 distance sampling alone puts o at

    def bound(objective: np.ndarray) -> float:
        solved = linprog(objective, A_ub=np.vstack([mixed_mass, residual]), b_ub=[share, fit.fun + slack],
                         A_eq=equalities, b_eq=targets, bounds=(0, None), method="highs")
        assert solved.fun is not None, solved.message  # feasible: the first fit's solution meets every constraint
        return float(solved.fun)

    low = bound(np.concatenate([np.asarray(lowest, dtype=float), np.full(n_judged, mixed_low),
                                np.zeros(2 * n_judged)]))
    high = -bound(-np.concatenate([np.asarray(highest, dtype=float), np.full(n_judged, mixed_high),
                                   np.zeros(2 * n_judged)]))
    return float(low), float(high)
