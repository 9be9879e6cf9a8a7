"""Regenerate the committed example outputs under reports/ from the bundled sample and offline judges.

    python tools/make_examples.py        (from the repository root)

Writes reports/heuristic/ (`calibrate fit --judge heuristic`), reports/comparison/ (`calibrate compare
--judges heuristic-strict,panel --order both --repeats 2`, baselines added) and reports/score-heuristic/
(`calibrate score --judge heuristic --responses sample`), each with the CLI's default settings, from a
fresh cache so that the counts do not depend on earlier runs. Recorded paths are portable (relative to
the repository or the package), so the files read the same on every machine;
tests/test_examples.py regenerates them and checks the committed ones against the code.
"""

from __future__ import annotations

from pathlib import Path

import calibrate

EXAMPLE_CACHE = Path("reports") / ".example-cache.sqlite3"


def make(root: Path = Path(".")) -> dict[str, Path]:
    """Write the three examples under `root`/reports/ (run with `root` as the working folder, so that
    the records name `reports/...`); returns each example's folder."""
    reports = root / "reports"
    cache = root / EXAMPLE_CACHE
    for stale in cache.parent.glob(cache.name + "*"):
        stale.unlink()
    folders = {"fit": reports / "heuristic", "compare": reports / "comparison", "score": reports / "score-heuristic"}
    try:
        fitted = calibrate.fit("heuristic", out=folders["fit"], cache=cache, show_progress=False)
        calibrate.compare(["heuristic-strict", "panel"], order="both", repeats=2, out=folders["compare"],
                          cache=cache, show_progress=False, n_boot=1000)  # the CLI's compare default
        calibrate.score("heuristic", ["sample"], calibration=fitted.paths["calibration"], out=folders["score"],
                        cache=cache, show_progress=False)
    finally:
        for used in cache.parent.glob(cache.name + "*"):
            used.unlink()
    return folders


if __name__ == "__main__":
    for kind, folder in make().items():
        print(f"{kind:<8} {folder}")
