"""The paper's Table 4 from any labels: how far annotators agree with each other, and each judge with
each annotator and with their consensus, on the score and on the refusal and no-information flags,
with PAC per rater; every figure with a percentile-bootstrap 95% interval over pairs.

A rater is a table indexed by item ("<set or source>/<pair_id>") with the label file's columns
(alignment_score and the four flags, floats, NaN = not given). The score is compared per pair on the
full scale -2..2 (Cohen's kappa unweighted and quadratic-weighted); a flag per (pair, person), 0/1.

The bootstrap resamples pairs (a pair's two flag units stay together) by weighting each pair's cells of
the confusion matrix with its multinomial draw count, so one matrix product gives every resample.
Kappa is `agreement.kappa_from_confusion`, computed as scikit-learn's `cohen_kappa_score` computes it
(tests hold the two to 1e-9); undefined values (a rater who never varies) are None.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd

from calibrate.data.labels import ANNOTATOR, ITEM, LABEL_FLAGS, SCORE, SCORE_LABELS
from calibrate.data.pairs import SetSource
from calibrate.judging.panel import median_score
from calibrate.records import Record, omitted_when_none
from calibrate.rounding import finite
from calibrate.stats.agreement import Interval, kappa_from_confusion, percentile_bounds, resampled_sums
from calibrate.stats.metrics import CONFIDENCE, bootstrap_means, per_pair_values, percentile_interval

CONSENSUS = "consensus"
FIELDS = {"score": (SCORE,), "refusal": LABEL_FLAGS[:2], "no_information": LABEL_FLAGS[2:]}
RATER_COLUMNS = (SCORE, *LABEL_FLAGS)


@dataclass(frozen=True)
class PaperFigures(Record):
    """One row group of the paper's Table 4: per field its statistics (two judges: both figures)."""

    score: dict[str, float | list[float]]
    refusal: dict[str, float | list[float]]
    no_information: dict[str, float | list[float]]


@dataclass(frozen=True)
class PaperTable4(Record):
    """The paper's published validation, shown beside ours for orientation."""

    source: str
    human_human: PaperFigures
    human_judge: PaperFigures
    pac: dict[str, float]


# Published validation (paper v3, arXiv 2510.05465): 200 pairs, two annotators, two judges.
PAPER_TABLE4 = PaperTable4(
    source="VAL-Bench paper v3 (arXiv 2510.05465): 200 pairs, two annotators, two judges",
    human_human=PaperFigures(score={"kappa_quadratic": 0.68}, refusal={"agreement": 87.0, "kappa": 0.43},
                             no_information={"agreement": 97.0, "kappa": 0.78}),
    human_judge=PaperFigures(score={"kappa_quadratic": [0.81, 0.70]},
                             refusal={"agreement": [95.0, 87.0], "kappa": [0.75, 0.49]},
                             no_information={"agreement": [98.0, 96.0], "kappa": [0.89, 0.76]}),
    pac={"judge": 47.75, "humans": 48.25},
)


@dataclass(frozen=True)
class RaterAgreement(Record):
    """One Table-4 cell group: two raters on one field (score, refusal, no_information) over `n` units;
    None where undefined; `ci` per statistic. The flags have no quadratic kappa (the key is absent)."""

    rater_a: str
    rater_b: str
    field: str
    n: int
    agreement: float | None
    kappa: float | None
    kappa_quadratic: float | None = None
    ci: dict[str, Interval] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        written = super().to_dict()
        if self.field != "score":
            del written["kappa_quadratic"]
        return written


@dataclass(frozen=True)
class HumanRow(Record):
    """A rater against the humans, as one leaderboard row (None where not measured)."""

    rater: str
    human_score_kappa_quadratic: float | None
    human_score_agreement: float | None
    human_refusal_kappa: float | None
    human_refusal_agreement: float | None
    human_no_information_kappa: float | None
    human_no_information_agreement: float | None
    human_pac: float | None


@dataclass(frozen=True, kw_only=True)
class HumanAgreement(Record):
    """The Table-4 record: `table` (one row per rater pair and field), PAC per rater with intervals, the
    consensus used, the paper's figures, and `leaderboard` (the humans' ceiling, then each judge against
    the humans). A comparison adds how many labelled items it judged and the labels' provenance."""

    n_items: int
    n_labelled_not_judged: int | None = omitted_when_none()
    annotators: list[str]
    judges: list[str]
    consensus: str | None
    rule: str
    table: list[RaterAgreement]
    pac: dict[str, float | None]
    pac_ci: dict[str, Interval]
    pac_n: dict[str, int]
    paper: PaperTable4
    leaderboard: list[HumanRow]
    source: str | None = None
    responses: dict[str, SetSource] | None = omitted_when_none()

    def pairs(self) -> dict[tuple[str, str], dict[str, RaterAgreement]]:
        """The table by rater pair, then field: how the reports and the terminal lay it out."""
        by_pair: dict[tuple[str, str], dict[str, RaterAgreement]] = {}
        for row in self.table:
            by_pair.setdefault((row.rater_a, row.rater_b), {})[row.field] = row
        return by_pair


def annotator_tables(labels: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Each annotator's labels (long label table) as a rater table, in order of first appearance."""
    names = labels.attrs.get("annotators") or list(dict.fromkeys(labels[ANNOTATOR]))
    return {name: labels[labels[ANNOTATOR] == name].set_index(ITEM)[list(RATER_COLUMNS)].astype(float)
            for name in names}


def consensus(annotators: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Per item: the median score (a half goes toward 0, as in a panel) and the majority of each flag
    (NaN on a tie: no consensus, so that flag unit is left out); NaN where nobody gave it."""
    stacked = pd.concat(list(annotators.values()), keys=list(annotators), names=["annotator", ITEM])
    grouped = stacked.groupby(level=ITEM, sort=False)

    def score(values: pd.Series) -> float:
        given = values.dropna()
        return float(median_score(given.astype(int).tolist())) if len(given) else np.nan

    def flag(values: pd.Series) -> float:
        given = values.dropna()
        share = given.mean() if len(given) else np.nan
        return np.nan if np.isnan(share) or share == 0.5 else float(share > 0.5)

    return pd.DataFrame({SCORE: grouped[SCORE].agg(score),
                         **{column: grouped[column].agg(flag) for column in LABEL_FLAGS}})


# --------------------------------------------------------------------------- kappa from counts


def confusion_cells(a: pd.DataFrame, b: pd.DataFrame, field: str) -> tuple[np.ndarray, int]:
    """Per pair (row) its counts in each cell of the k x k confusion matrix (flattened), over the units
    both raters gave; and the number of units. Pairs without any shared unit are left out."""
    items = a.index.intersection(b.index)
    columns = FIELDS[field]
    k = len(SCORE_LABELS) if field == "score" else 2
    offset = 2 if field == "score" else 0
    cells = np.zeros((len(items), k * k))
    for column in columns:
        x, y = a.loc[items, column].to_numpy(float), b.loc[items, column].to_numpy(float)
        both = ~np.isnan(x) & ~np.isnan(y)
        rows = np.flatnonzero(both)
        np.add.at(cells, (rows, (x[both] + offset).astype(int) * k + (y[both] + offset).astype(int)), 1.0)
    used = cells.sum(axis=1) > 0
    return cells[used], int(cells.sum())


def statistics(counts: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Agreement (percent) and Cohen's kappa, unweighted and quadratic, of confusion counts (..., k*k)."""
    matrix = counts.reshape(*counts.shape[:-1], k, k)
    return {"agreement": 100.0 * np.trace(matrix, axis1=-2, axis2=-1) / matrix.sum(axis=(-2, -1)),
            "kappa": kappa_from_confusion(matrix), "kappa_quadratic": kappa_from_confusion(matrix, "quadratic")}


def compare_raters(a: pd.DataFrame, b: pd.DataFrame, raters: tuple[str, str], field: str, n_boot: int,
                   seed: int) -> RaterAgreement:
    """One Table-4 cell group: n units, agreement, kappa (and quadratic kappa for the score), with intervals."""
    k = len(SCORE_LABELS) if field == "score" else 2
    cells, n = confusion_cells(a, b, field)
    names = ("agreement", "kappa", "kappa_quadratic") if field == "score" else ("agreement", "kappa")
    if n == 0:
        return RaterAgreement(*raters, field, n, None, None, ci={name: (None, None) for name in names})
    point = statistics(cells.sum(axis=0), k)
    draws = statistics(resampled_sums(cells, n_boot, seed), k)
    values = {name: finite(point[name]) for name in names}  # unrounded: equal to scikit-learn's
    return RaterAgreement(*raters, field, n, values["agreement"], values["kappa"], values.get("kappa_quadratic"),
                          ci={name: percentile_bounds(draws[name], CONFIDENCE) for name in names})


# --------------------------------------------------------------------------- Table 4


def rater_pairs(annotators: list[str], judges: list[str], with_consensus: bool) -> list[tuple[str, str]]:
    """Annotator-annotator, then per judge: judge-annotator and judge-consensus."""
    pairs = list(combinations(annotators, 2))
    for judge in judges:
        pairs += [(judge, name) for name in annotators] + ([(judge, CONSENSUS)] if with_consensus else [])
    return pairs


def rater_pac(rater: pd.DataFrame, rule: str, n_boot: int, seed: int) -> tuple[float | None, Interval, int]:
    """PAC (percent) over the pairs the rater scored, under the rule, its interval and the number of
    pairs; a flag not given counts as false."""
    scored = rater[rater[SCORE].notna()]
    refusal_1, refusal_2, no_info_1, no_info_2 = (scored[column].fillna(0.0).to_numpy(bool) for column in LABEL_FLAGS)
    score = scored[SCORE].to_numpy(float)
    values = per_pair_values(score, refusal_1, refusal_2, no_info_1, no_info_2, rule)["PAC"].to_numpy()
    if not len(values):
        return None, (None, None), 0
    low, high = percentile_interval(bootstrap_means(values[:, None], n_boot, seed))[:, 0]
    return finite(values.mean()), (finite(low), finite(high)), int(len(values))


def table4(labels: pd.DataFrame, judges: Mapping[str, pd.DataFrame], rule: str, n_boot: int,
           seed: int) -> HumanAgreement:
    """The Table-4 record (`HumanAgreement`) over the labelled items.

    `labels`: the long label table; `judges`: judge name -> rater table over the labelled items."""
    annotators = annotator_tables(labels)
    raters: dict[str, pd.DataFrame] = {**annotators, **judges}
    with_consensus = len(annotators) >= 2
    if with_consensus:
        raters[CONSENSUS] = consensus(annotators)
    rows = []
    for index, (a, b) in enumerate(rater_pairs(list(annotators), list(judges), with_consensus)):
        for offset, field_name in enumerate(FIELDS):
            rows.append(compare_raters(raters[a], raters[b], (a, b), field_name, n_boot, seed + 1000 * index + offset))
    pac = {name: rater_pac(rater, rule, n_boot, seed) for name, rater in raters.items()}
    reference = CONSENSUS if with_consensus else next(iter(annotators))
    # the humans' own agreement (mean over annotator pairs) first: the ceiling a judge is measured against
    ceiling = ([mean_row("humans", [r for r in rows if r.rater_a in annotators and r.rater_b in annotators],
                         pac[CONSENSUS][0])] if with_consensus else [])
    return HumanAgreement(
        n_items=int(labels[ITEM].nunique()), annotators=list(annotators), judges=list(judges),
        consensus="median score (a half toward 0), majority flags (a tie: not compared)" if with_consensus else None,
        rule=rule, table=rows, pac={name: value for name, (value, _, _) in pac.items()},
        pac_ci={name: ci for name, (_, ci, _) in pac.items()}, pac_n={name: n for name, (_, _, n) in pac.items()},
        paper=PAPER_TABLE4,
        leaderboard=ceiling + [mean_row(judge, [r for r in rows if r.rater_a == judge and r.rater_b == reference],
                                        pac[judge][0]) for judge in judges])


def mean_row(rater: str, rows: list[RaterAgreement], pac: float | None) -> HumanRow:
    """A rater against the humans: the mean over `rows` (its Table-4 rows against the consensus, or the
    one annotator; for the humans themselves, every annotator pair) of each statistic."""
    def mean(field_name: str, statistic: str) -> float | None:
        values = [getattr(r, statistic) for r in rows if r.field == field_name and getattr(r, statistic) is not None]
        return finite(np.mean(values)) if values else None

    return HumanRow(rater, mean("score", "kappa_quadratic"), mean("score", "agreement"), mean("refusal", "kappa"),
                    mean("refusal", "agreement"), mean("no_information", "kappa"), mean("no_information", "agreement"),
                    pac)
