"""Coverage of the Table-4 bootstrap intervals (stats/humans.py) in the situations users meet: two
raters on 50, 100 or 200 labelled pairs, a score that agrees like the paper's annotators (quadratic
kappa about 0.7) and refusal flags set for about a fifth of the answers, both persons of a pair alike.

For each case, many simulated label sets are drawn from one known population; the population's
agreement and kappas are computed from its exact cell probabilities (two million simulated pairs), and
an interval "covers" when it holds that value. Run (from the repo root):
    python -m benchmarks.bench_human_intervals [--reps 400] [--n-boot 1000]
Prints one line per case and statistic: coverage of the nominal 95% interval, and the mean width.
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

from calibrate.stats.humans import compare_raters, statistics

LATENT = np.array([0.2, 0.15, 0.25, 0.15, 0.25])  # P(score = -2..2) of the pair's "true" stance


def draw(n: int, rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two raters' labels of n pairs: each reads the true score off 45% of the time (by one, or by two
    a third of those times) and flips a true flag 12% of the time; true refusals are shared within a
    pair (both 10%, one 15%)."""
    truth = rng.choice(np.arange(-2, 3), size=n, p=LATENT)
    both = rng.random(n) < 0.10
    one = ~both & (rng.random(n) < 0.15)
    side = rng.random(n) < 0.5
    true_flags = np.stack([both | (one & side), both | (one & ~side)], axis=1)
    raters = []
    for _ in range(2):
        off = rng.random(n) < 0.45
        shift = rng.choice([-2, -1, 1, 2], n, p=[1 / 6, 1 / 3, 1 / 3, 1 / 6])
        score = np.clip(truth + np.where(off, shift, 0), -2, 2)
        flags = true_flags ^ (rng.random((n, 2)) < 0.12)
        raters.append(pd.DataFrame({"alignment_score": score.astype(float),
                                    "person_1_refusal": flags[:, 0].astype(float),
                                    "person_2_refusal": flags[:, 1].astype(float),
                                    "person_1_has_no_information": np.nan, "person_2_has_no_information": np.nan},
                                   index=[f"s/{i}" for i in range(n)]))
    return raters[0], raters[1]


def population(field: str, rng: np.random.Generator) -> dict[str, float]:
    from calibrate.stats.humans import confusion_cells

    a, b = draw(2_000_000, rng)
    cells, _ = confusion_cells(a, b, field)
    k = 5 if field == "score" else 2
    return {name: float(value) for name, value in statistics(cells.sum(axis=0), k).items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=400)
    parser.add_argument("--n-boot", type=int, default=1000)
    args = parser.parse_args()
    rng = np.random.default_rng(20261130)
    truth = {field: population(field, rng) for field in ("score", "refusal")}
    print("population:", {f: {k: round(v, 3) for k, v in t.items()} for f, t in truth.items()})
    for n in (50, 100, 200):
        hits: dict[tuple[str, str], list[bool]] = {}
        widths: dict[tuple[str, str], list[float]] = {}
        for rep in range(args.reps):
            a, b = draw(n, rng)
            for field in ("score", "refusal"):
                row = compare_raters(a, b, ("a", "b"), field, args.n_boot, seed=rep)
                for name, (low, high) in row.ci.items():
                    if low is None:
                        continue
                    hits.setdefault((field, name), []).append(low <= truth[field][name] <= high)
                    widths.setdefault((field, name), []).append(high - low)
        for (field, name), covered in hits.items():
            print(f"n={n:4d} {field:8s} {name:16s} coverage {100 * np.mean(covered):5.1f}%  "
                  f"mean width {np.mean(widths[(field, name)]):.3f}  ({len(covered)} intervals)")


if __name__ == "__main__":
    main()
