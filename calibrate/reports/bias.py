"""One table of a judge's biases, shared by the fit and compare reports: per judge and transformation (and
`position`, with both orders) the PAC and REF shift from the untransformed pairs with its paired 95%
interval, the share of pairs whose judgment moved, and the flag; plus a figure of the PAC shifts with their
intervals, one row per judge (stats/invariance.py computes them, this renders them)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from calibrate.reports.render import FIGURE_WIDTH, Block, png
from calibrate.stats.invariance import INVARIANCE_TOLERANCE, InvarianceShift

MEANINGS = {
    "padding": "neutral filler after one answer, to 2x or 4x its length",
    "hedging": "a qualifier (\"some would say\") after every claim",
    "markdown": "the same sentences under a heading, one bullet each",
    "politeness": "a courteous or curt opening and closing",
    "position": "the two answers swapped (reverse order against forward)",
}


def _signed(value: float | None, ci: tuple[float | None, float | None]) -> str:
    if value is None or ci[0] is None or ci[1] is None:
        return "n/a"
    return f"{value:+.1f} [{ci[0]:+.1f}, {ci[1]:+.1f}]"


def bias_table(judges: dict[str, dict[str, InvarianceShift]]) -> pd.DataFrame:
    rows = [{"judge": judge, "bias": name, "what changed": MEANINGS.get(name, "a user transformation"),
             "pairs": shift.n_pairs, "PAC shift [95% CI]": _signed(shift.pac_shift, shift.ci),
             "REF shift [95% CI]": _signed(shift.ref_shift, shift.ref_ci),
             "judgment moved %": "n/a" if shift.moved_share is None else f"{shift.moved_share:.1f}",
             "flagged": "YES" if shift.flagged else "no"}
            for judge, shifts in judges.items() for name, shift in shifts.items()]
    return pd.DataFrame(rows)


def figure_biases(judges: dict[str, dict[str, InvarianceShift]]) -> bytes:
    """PAC shift with its interval per transformation, one row of panels per judge; flagged ones in red."""
    fig = Figure(figsize=(FIGURE_WIDTH, 1.0 + 0.35 * sum(max(len(s), 1) for s in judges.values())))
    axes = np.atleast_1d(fig.subplots(len(judges), 1, sharex=True, squeeze=False)[:, 0])
    for ax, (judge, shifts) in zip(axes, judges.items(), strict=True):
        names = list(shifts)
        for row, name in enumerate(names):
            shift = shifts[name]
            if shift.pac_shift is None or shift.ci[0] is None or shift.ci[1] is None:
                continue
            color = "tab:red" if shift.flagged else "tab:blue"
            ax.errorbar([shift.pac_shift], [row],
                        xerr=[[shift.pac_shift - shift.ci[0]], [shift.ci[1] - shift.pac_shift]], fmt="o", color=color,
                        capsize=3)
        ax.axvspan(-INVARIANCE_TOLERANCE, INVARIANCE_TOLERANCE, color="grey", alpha=0.12)
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_yticks(range(len(names)), names)
        ax.set_ylim(len(names) - 0.5, -0.5)
        ax.set_title(judge, fontsize=9, loc="left")
        ax.grid(axis="x", alpha=0.3)
    axes[-1].set_xlabel("PAC shift from the untransformed pairs (points, 95% CI)")
    return png(fig)


def bias_blocks(judges: dict[str, dict[str, InvarianceShift]]) -> list[Block]:
    """The section of a report; nothing when no judge's biases were measured."""
    judges = {judge: shifts for judge, shifts in judges.items() if shifts}
    if not judges:
        return []
    return [Block("h2", "What moves the judge: biases"),
            Block("p", "Each answer of the calibration sets reworded without changing its stance (docs/bias.md), "
                       "so a judge that reads stances judges every reworded pair as before. Shift = transformed − "
                       "untransformed on the same pairs (PAC and REF, points), with a paired bootstrap 95% interval; "
                       "`judgment moved` is the share of pairs whose score or refusal flags changed. **Flagged** "
                       f"when an interval lies wholly beyond ±{INVARIANCE_TOLERANCE:g} points: the judge is moved, "
                       "and by more than the tolerance. `position` is the same pairs in reverse order."),
            Block("table", table=bias_table(judges)),
            Block("figure", "PAC shift per transformation with its 95% interval (red: flagged; grey band: the "
                            "tolerance).", png=figure_biases(judges), name="biases")]
