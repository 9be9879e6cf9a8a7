"""The committed example outputs under reports/ are what the code makes today, and portable: no path of
the machine that made them. tools/make_examples.py regenerates them; here they are regenerated into a
temporary folder and compared, number for number, with the committed ones."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "reports"
# Fields that differ between two runs of the same code: clocks, timings, the installed versions, and what
# one run did rather than what it found (the README's quick start rewrites reports/heuristic/ with the
# user's own cache, which may already hold the judgments).
VOLATILE = {"created_at", "elapsed_s", "package_versions", "latency_s", "latency_p50_s", "latency_p95_s",
            "mean_latency_s", "run", "cost_usd_this_run", "requests_this_run"}
RUN_WORDS = ("this run", "judged now", "reused", "latency")  # latency: a timing, as volatile as a clock
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
    numbers is left out whole)."""
    kept, skipping = [], False
    for line in markdown.splitlines():
        if skipping:
            skipping = bool(line.strip())
            continue
        if line.startswith("|") and "judged now" in line:
            skipping = True
            continue
        if not any(word in line.lower() for word in RUN_WORDS):
            kept.append(TIMING.sub("#", line))
    return kept


def make_examples(root: Path) -> dict[str, Path]:
    spec = importlib.util.spec_from_file_location("make_examples", REPO / "tools" / "make_examples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make(root)


def test_committed_examples_hold_no_path_of_the_machine_that_made_them():
    files = [f for f in EXAMPLES.rglob("*") if f.suffix in (".json", ".md", ".html", ".csv")]
    assert len(files) >= 12
    leaks = {str(f.relative_to(REPO)): MACHINE_PATH.findall(f.read_text(encoding="utf-8")) for f in files}
    assert {name: found for name, found in leaks.items() if found} == {}


def test_committed_examples_are_what_the_code_makes_today(tmp_path):
    folders = make_examples(tmp_path)  # the working folder is tmp_path (conftest), as the script's is the repo
    for kind, record in (("fit", "calibration.json"), ("compare", "comparison.json"), ("score", "metrics.json")):
        fresh = json.loads((folders[kind] / record).read_text())
        committed = json.loads((EXAMPLES / folders[kind].name / record).read_text())
        assert stable(fresh) == stable(committed), f"{folders[kind].name}/{record} is stale: run tools/make_examples.py"
    for folder, table in (("comparison", "comparison.csv"), ("score-heuristic", "breakdown_category.csv"),
                          ("score-heuristic", "leaderboard.csv")):
        fresh = pd.read_csv(tmp_path / "reports" / folder / table)
        committed = pd.read_csv(EXAMPLES / folder / table)
        keep = [c for c in committed.columns if "latency" not in c]
        pd.testing.assert_frame_equal(fresh[keep], committed[keep])
    for folder in ("heuristic", "comparison", "score-heuristic"):
        fresh_report = stable_report((tmp_path / "reports" / folder / "report.md").read_text())
        assert len(fresh_report) > 40
        assert fresh_report == stable_report((EXAMPLES / folder / "report.md").read_text()), folder
