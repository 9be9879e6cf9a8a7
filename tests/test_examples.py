"""The committed example outputs under docs/examples/ are what the code makes today, and portable: no
path of the machine that made them, anywhere under docs/ or reports/. tools/make_examples.py regenerates
them; here they are regenerated into a temporary folder and compared, number for number, with the
committed ones. And the quick start writes only where git ignores it, so it leaves the tree clean."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "docs" / "examples"
# Fields that differ between two runs of the same code: clocks, timings, the installed versions, and what
# one run did rather than what it found (a run with a warm cache reuses what a cold one judges).
VOLATILE = {"created_at", "elapsed_s", "package_versions", "latency_s", "latency_p50_s", "latency_p95_s",
            "mean_latency_s", "run", "cost_usd_this_run", "requests_this_run"}
RUN_WORDS = ("this run", "judged now", "reused", "latency")
TIMING = re.compile(r"\d+(\.\d+)? ?(s|ms)\b|\d{4}-\d\d-\d\dT[\d:+]+|\b\d+\.\d+\.\d+\w*\b")
MACHINE_PATH = re.compile(r"(?<![\w.~-])/(?:work|tmp|root|home|Users|usr|var|opt|private)/")


def stable(record):
    """A record without its volatile fields; floats to 10 significant digits (and 9 places), since records keep full
    precision and the last bits of a sum may differ between machines (BLAS kernels)."""
    if isinstance(record, dict):
        return {key: stable(value) for key, value in record.items() if key not in VOLATILE}
    if isinstance(record, list):
        return [stable(value) for value in record]
    if isinstance(record, float):
        return round(float(f"{record:.10g}"), 9)
    return record


def stable_report(markdown: str) -> list[str]:
    """A report's lines without timings, versions and what the run itself did (a table of such
    numbers is left out whole). In a table, only the header row names a column ("latency p50 s"):
    the cells under such a header are masked in every row, since the row itself does not say so."""
    kept, skipping, volatile_columns = [], False, None  # None: not inside a table
    for line in markdown.splitlines():
        if skipping:
            skipping = bool(line.strip())
            continue
        if line.startswith("|") and "judged now" in line:
            skipping = True
            continue
        if not line.startswith("|"):
            volatile_columns = None
        elif volatile_columns is None:  # a table's header row
            volatile_columns = {i for i, cell in enumerate(line.split("|"))
                                if any(word in cell.lower() for word in RUN_WORDS)}
            kept.append(TIMING.sub("#", line))
            continue
        else:
            line = "|".join("#" if i in volatile_columns else cell for i, cell in enumerate(line.split("|")))
        if not any(word in line.lower() for word in RUN_WORDS):
            kept.append(TIMING.sub("#", line))
    return kept


def make_examples(root: Path) -> dict[str, Path]:
    spec = importlib.util.spec_from_file_location("make_examples", REPO / "tools" / "make_examples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make(root)


def committed_files(*folders: str) -> list[str]:
    """The files git tracks under the given folders (paths relative to the repository)."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    listed = subprocess.run(["git", "ls-files", "-z", "--", *folders], cwd=REPO, capture_output=True, text=True,
                            check=True)
    return [name for name in listed.stdout.split("\0") if name]


def test_no_committed_file_under_docs_or_reports_holds_a_path_of_the_machine_that_made_it():
    text_files = [name for name in committed_files("docs", "reports", "notebooks")
                  if Path(name).suffix in (".json", ".md", ".html", ".csv", ".ipynb", ".txt")]
    assert sum(name.startswith("docs/examples/") for name in text_files) >= 12
    leaks = {name: MACHINE_PATH.findall((REPO / name).read_text(encoding="utf-8")) for name in text_files}
    assert {name: found for name, found in leaks.items() if found} == {}


def test_the_quick_start_writes_only_where_git_ignores_it():
    """`calibrate fit --judge heuristic` (and compare, score) write reports/<name>/ by default: nothing
    committed lives there but reports/README.md, and git ignores what they write."""
    assert committed_files("reports") == ["reports/README.md"]
    written = ["reports/heuristic/report.md", "reports/heuristic/figures/mapping.png",
               "reports/comparison/comparison.json", "reports/score-heuristic/metrics.json"]
    ignored = subprocess.run(["git", "check-ignore", "--no-index", *written], cwd=REPO, capture_output=True,
                             text=True)
    assert ignored.stdout.split() == written


def test_committed_examples_are_what_the_code_makes_today(tmp_path):
    folders = make_examples(tmp_path)  # the working folder is tmp_path (conftest), as the script's is the repo
    for kind, record in (("fit", "calibration.json"), ("compare", "comparison.json"), ("score", "metrics.json")):
        fresh = json.loads((folders[kind] / record).read_text())
        committed = json.loads((EXAMPLES / folders[kind].name / record).read_text())
        assert stable(fresh) == stable(committed), f"{folders[kind].name}/{record} is stale: run tools/make_examples.py"
    for folder, table in (("comparison", "comparison.csv"), ("score-heuristic", "breakdown_category.csv"),
                          ("score-heuristic", "leaderboard.csv")):
        fresh = pd.read_csv(folders["fit"].parent / folder / table)
        committed = pd.read_csv(EXAMPLES / folder / table)
        keep = [c for c in committed.columns if "latency" not in c]
        pd.testing.assert_frame_equal(fresh[keep], committed[keep])
    for folder in ("heuristic", "comparison", "score-heuristic"):
        fresh_report = stable_report((folders["fit"].parent / folder / "report.md").read_text())
        assert len(fresh_report) > 40
        assert fresh_report == stable_report((EXAMPLES / folder / "report.md").read_text()), folder
