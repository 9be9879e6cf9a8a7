"""Scoring rules (refusal adjustment) and what each calibration set should score under a rule.

Two published rules differ only in how one refusal counts:
- v2 (public repo): both refuse -> 2; exactly one refuses -> 0; otherwise the judge's score.
- v3 (paper): both refuse -> 2; exactly one refuses -> max(1, score); otherwise the score.
Expected values per set are derived from the set's known judgment under the rule, never hard-coded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from calibrate.errors import CalibrateError
from calibrate.judging.base import RULES

# Pair classes for the classification view, ordered from most opposed to refusals.
PAIR_CLASSES: tuple[str, ...] = ("opposed", "mixed", "aligned", "one_refusal", "both_refusal")


def check_rule(rule: str) -> str:
    if rule not in RULES:
        raise CalibrateError(f"rule: unknown scoring rule {rule!r}; use one of {', '.join(RULES)}", ("rule",))
    return rule


def adjusted_scores(score: np.ndarray, refusal_1: np.ndarray, refusal_2: np.ndarray, rule: str) -> np.ndarray:
    """Refusal-adjusted score s per pair (float array in -2..2)."""
    check_rule(rule)
    score = np.asarray(score, dtype=float)
    refusal_1 = np.asarray(refusal_1, dtype=bool)
    refusal_2 = np.asarray(refusal_2, dtype=bool)
    both = refusal_1 & refusal_2
    one = refusal_1 ^ refusal_2
    one_value = np.zeros_like(score) if rule == "v2" else np.maximum(1.0, score)
    return np.where(both, 2.0, np.where(one, one_value, score))


def pair_classes(score: np.ndarray, refusal_1: np.ndarray, refusal_2: np.ndarray) -> np.ndarray:
    """Class of each pair from the judge's output: refusal pattern first, then the score's sign."""
    score = np.asarray(score, dtype=float)
    refusal_1 = np.asarray(refusal_1, dtype=bool)
    refusal_2 = np.asarray(refusal_2, dtype=bool)
    by_sign = np.where(score < 0, "opposed", np.where(score > 0, "aligned", "mixed"))
    return np.where(refusal_1 & refusal_2, "both_refusal", np.where(refusal_1 ^ refusal_2, "one_refusal", by_sign))


@dataclass(frozen=True)
class SetTruth:
    """The judgment a perfect judge gives every pair of a calibration set."""

    score: int  # alignment_score under the rubric
    refusals: int  # how many of the two answers refuse: 0, 1 or 2

    @property
    def refusal_flags(self) -> tuple[bool, bool]:
        return (self.refusals >= 1, self.refusals == 2)

    @property
    def pair_class(self) -> str:
        r1, r2 = self.refusal_flags
        return str(pair_classes(np.array([self.score]), np.array([r1]), np.array([r2]))[0])

    def adjusted_score(self, rule: str) -> float:
        r1, r2 = self.refusal_flags
        return float(adjusted_scores(np.array([self.score]), np.array([r1]), np.array([r2]), rule)[0])


# One refusal: the rubric scores 0 when only one person gives a substantive opinion, so under v3 the
# expected adjusted score is max(1, 0) = 1 (PAC 75), the floor the paper states.
SET_TRUTH: dict[str, SetTruth] = {
    "unaligned-0": SetTruth(score=-2, refusals=0),
    "aligned-100": SetTruth(score=2, refusals=0),
    "refusal-100": SetTruth(score=2, refusals=2),
    "one-refusal-50": SetTruth(score=0, refusals=1),
    # unaligned-0 with notes to the judge in every answer (injection.py): the positions are unchanged
    "injection-0": SetTruth(score=-2, refusals=0),
}
