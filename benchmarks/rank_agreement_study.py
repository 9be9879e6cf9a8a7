"""The rank-agreement study: do the intervals of `compare --responses` cover? Kendall's tau between two judges'
leaderboards and a judge's self-preference, on synthetic models and judges whose truth is known, computed by the
code `compare` runs (calibrate/stats/rank_agreement_simulation.py); writes its section of docs/statistics.md.

    python -m benchmarks.rank_agreement_study [--replications 100] [--bootstrap 200] [--workers 2]
    python -m benchmarks.rank_agreement_study --done-when   # four situations, 30 replications each, printed
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from benchmarks import machine
from calibrate.stats import rank_agreement_simulation as ras
from calibrate.stats import simulation as sim

DOC = Path(__file__).resolve().parent.parent / "docs" / "statistics.md"
SEED = 2026


@dataclass(frozen=True)
class Situation:
    """A row of the table: models, their gap in PAC points, whether the judges agree in population (else the
    first judge lifts its own model by 1.5 gaps, past the next one), an article effect, the calibration pairs
    per set and benchmark pairs per model, and whether articles are resampled (as `compare` does) or single
    pairs (the naive interval)."""

    n_models: int
    gap: float
    agree: bool = True
    article_effect: float = 0.0
    n_calibration: int = 100
    n_pairs: int = 1000
    clustered: bool = True

    def study(self) -> ras.Study:
        own = (self.n_models - 1) // 2  # the first judge's family's model: a middle one, with a model above it
        families = tuple("acme" if m == own else None for m in range(self.n_models))
        judges = (ras.SimulatedJudge("heuristic", sim.HEURISTIC, family="acme"),
                  ras.SimulatedJudge("over-calling", sim.OVERCALLING))
        study = ras.Study(ras.spaced_mixes(self.n_models, self.gap), judges, families=families,
                          n_pairs=self.n_pairs, n_calibration=self.n_calibration, article_size=10,
                          article_share=self.article_effect, judge_article_share=self.article_effect,
                          clustered=self.clustered)
        if self.agree:
            return study
        return replace(study, judges=(replace(judges[0], lean=ras.lean_for(study, 1.5 * self.gap)), judges[1]))


SITUATIONS = (
    Situation(3, 10), Situation(3, 3), Situation(5, 10), Situation(5, 3), Situation(8, 10), Situation(8, 3),
    Situation(3, 10, agree=False), Situation(3, 3, agree=False), Situation(5, 10, agree=False),
    Situation(5, 3, agree=False), Situation(8, 3, agree=False),
    Situation(5, 3, article_effect=0.5), Situation(5, 3, agree=False, article_effect=0.5),
    Situation(5, 3, n_calibration=36, n_pairs=200), Situation(5, 3, agree=False, n_calibration=36, n_pairs=200),
    Situation(8, 3, n_calibration=200, n_pairs=2000),
    Situation(5, 3, article_effect=0.5, clustered=False),
    Situation(5, 3, agree=False, article_effect=0.5, clustered=False),
)
DONE_WHEN = (Situation(3, 3), Situation(8, 3), Situation(5, 3, agree=False), Situation(5, 3, article_effect=0.5))


def _row(job: tuple[Situation, int, int, int]) -> str:
    situation, replications, n_boot, seed = job
    found = ras.run(situation.study(), replications, n_boot, seed=seed)
    tau, preference = found.tau, found.preference
    return (f"| {situation.n_models} | {situation.gap:g} | {'yes' if situation.agree else 'no'} | "
            f"{situation.article_effect:.0%} | {'articles' if situation.clustered else 'pairs'} | "
            f"{situation.n_calibration} | {situation.n_pairs} | "
            f"{found.true_tau:+.2f} | {tau.rate:.2f} ± {tau.uncertainty:.2f} ({tau.count}) | {tau.width:.2f} | "
            f"{found.tau_exact:.2f} | {found.true_preference:+.1f} | "
            f"{preference.rate:.2f} ± {preference.uncertainty:.2f} ({preference.count}) | {preference.width:.1f} | "
            f"{preference.width_ratio:.2f} |")


def table(situations: tuple[Situation, ...], replications: int, n_boot: int, workers: int) -> list[str]:
    lines = ["| models | gap (PAC) | judges agree | article effect | resampled | calibration pairs per set | "
             "benchmark pairs per model | true tau | tau: coverage ± s.e. (datasets) | tau: mean width | "
             "point tau exact | true self-preference | self-preference: coverage ± s.e. (datasets) | "
             "self-preference: mean width | self-preference: width / (3.92 sd of estimates) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    jobs = [(situation, replications, n_boot, SEED + k) for k, situation in enumerate(situations)]
    with ProcessPoolExecutor(workers) as pool:
        for line in pool.map(_row, jobs):
            print(line, flush=True)
            lines.append(line)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replications", type=int, default=100)
    parser.add_argument("--bootstrap", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=DOC)
    parser.add_argument("--done-when", action="store_true", help="Four situations, 30 replications each, printed.")
    args = parser.parse_args()
    started = time.perf_counter()
    if args.done_when:
        table(DONE_WHEN, 30, args.bootstrap, args.workers)
        print(f"{time.perf_counter() - started:.0f} s; {machine()}")
        return
    lines = table(SITUATIONS, args.replications, args.bootstrap, args.workers)
    print(f"{time.perf_counter() - started:.0f} s; {machine()}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
