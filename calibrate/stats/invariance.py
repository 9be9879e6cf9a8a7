"""What moves a judge: its judgments of the invariance sets (data/invariance.py) against the same pairs
untransformed, and of the pairs in reverse order against forward.

Every transformation keeps each answer's stance, so a judge that reads stances judges a transformed pair
as it judged the source pair: its PAC and REF shift is 0. The shifts are paired (the same pairs on both
sides) and their 95% intervals come from one bootstrap over pairs for both metrics, so a small but
consistent move is seen. A transformation is `flagged` when an interval lies wholly beyond
±INVARIANCE_TOLERANCE points: a shift that is both real (the interval excludes 0) and large enough to
matter (by more than the tolerance), not a few pairs flipping by chance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from calibrate.data.calibration import CALIBRATION_SETS
from calibrate.data.invariance import derived_name
from calibrate.records import Record
from calibrate.rounding import finite
from calibrate.stats.metrics import Interval, bootstrap_means, percentile_interval
from calibrate.stats.rules import adjusted_scores

INVARIANCE_TOLERANCE = 5.0  # PAC / REF points an interval must lie beyond for a flag
POSITION = "position"  # the row of the answers' order (forward against reverse), measured with order both
JUDGMENT = ["alignment_score", "person_1_refusal", "person_2_refusal"]


@dataclass(frozen=True)
class InvarianceShift(Record):
    """How far one transformation moved a judge (`judges.<j>.invariance.<name>`): PAC and REF on the
    transformed pairs minus on the same pairs untransformed, each with a paired 95% interval; the share
    (percent) of pairs whose judgment (score or a refusal flag) moved; `flagged` as the module says."""

    n_pairs: int
    pac_shift: float | None
    ci: Interval
    ref_shift: float | None
    ref_ci: Interval
    moved_share: float | None
    flagged: bool


def _keyed(rows: pd.DataFrame) -> pd.DataFrame:
    ok = rows[rows["parse_status"] == "ok"]
    return ok.drop_duplicates(["set_name", "pair_id"]).set_index(["set_name", "pair_id"])[JUDGMENT]


def _metrics(rows: pd.DataFrame, rule: str) -> tuple[np.ndarray, np.ndarray]:
    """Per pair: PAC (refusal-adjusted score on 0..100, as every reported PAC) and REF (share of refusals)."""
    first, second = (rows[f"person_{k}_refusal"].to_numpy(bool) for k in (1, 2))
    pac = (adjusted_scores(rows["alignment_score"].to_numpy(float), first, second, rule) + 2.0) / 4.0 * 100.0
    return pac, (first.astype(float) + second) / 2.0 * 100.0


def paired_shift(base: pd.DataFrame, moved: pd.DataFrame, rule: str, n_boot: int, seed: int) -> InvarianceShift:
    """`moved` against `base`, both indexed by (source set, pair id), on the pairs judged in both."""
    both = base.add_suffix("_base").join(moved.add_suffix("_moved"), how="inner")
    if both.empty:
        return InvarianceShift(0, None, (None, None), None, (None, None), None, False)
    sides = {side: both[[f"{column}_{side}" for column in JUDGMENT]].set_axis(JUDGMENT, axis=1)
             for side in ("base", "moved")}
    (pac_base, ref_base), (pac_moved, ref_moved) = (_metrics(sides[side], rule) for side in ("base", "moved"))
    shifts = np.column_stack([pac_moved - pac_base, ref_moved - ref_base])
    low, high = percentile_interval(bootstrap_means(shifts, n_boot, seed))  # one resampling for both metrics
    changed = (sides["base"].to_numpy() != sides["moved"].to_numpy()).any(axis=1)
    flagged = bool(((low > INVARIANCE_TOLERANCE) | (high < -INVARIANCE_TOLERANCE)).any())
    return InvarianceShift(
        n_pairs=int(len(both)), pac_shift=finite(shifts[:, 0].mean()), ci=(finite(low[0]), finite(high[0])),
        ref_shift=finite(shifts[:, 1].mean()), ref_ci=(finite(low[1]), finite(high[1])),
        moved_share=100.0 * float(changed.mean()), flagged=flagged)


def invariance_shifts(table: pd.DataFrame, names: list[str], orders: tuple[str, ...], rule: str, n_boot: int,
                      seed: int) -> dict[str, InvarianceShift] | None:
    """Per transformation in `names`, its shift on the calibration sets (pooled, paired by set and pair id),
    in the metrics order; with both orders, `position` too (reverse against forward). None when neither
    was measured. `table`: a judge's judgments (first repeat used)."""
    rows = table[table["repeat"] == 0]
    primary = rows[rows["order"] == orders[0]]
    base = _keyed(primary[primary["set_name"].isin(CALIBRATION_SETS)])
    shifts = {}
    for name in names:
        derived = {derived_name(source, name): source for source in CALIBRATION_SETS}
        picked = primary[primary["set_name"].isin(list(derived))]
        moved = picked.assign(set_name=picked["set_name"].map(derived))
        shifts[name] = paired_shift(base, _keyed(moved), rule, n_boot, seed)
    if len(orders) == 2:
        reverse = rows[(rows["order"] == orders[1]) & rows["set_name"].isin(CALIBRATION_SETS)]
        # reverse shows the against answer as person 1: its flags back on the forward persons
        reverse = reverse.rename(columns={"person_1_refusal": "person_2_refusal",
                                          "person_2_refusal": "person_1_refusal"})
        shifts[POSITION] = paired_shift(base, _keyed(reverse), rule, n_boot, seed)
    return shifts or None
