"""Paired differences between models scored by one judge (metrics.json `differences`).

(This branch holds only the record; its computation is built elsewhere, and compare's rank agreement reads it.)
"""

from __future__ import annotations

from dataclasses import dataclass

from calibrate.records import Record


@dataclass(frozen=True, kw_only=True)
class Difference(Record):
    """One metric's difference between two models on their shared pairs: `value` is a - b, with its 95%
    interval, p-value and Holm-adjusted p-value; `basis`: what the headline it differences rests on."""

    model_a: str
    model_b: str
    metric: str
    value: float | None
    ci: tuple[float, float]
    p_value: float | None
    p_adjusted: float | None
    n_shared: int
    basis: str
