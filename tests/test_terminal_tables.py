"""The CLI's tables as a person sees them on an 80-column terminal: no table line wider than the terminal,
every number whole beside its interval on one line, every row's name there; and one table when there is
room. (Sentences are printed one line each, whatever their length: the terminal wraps them.)"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from rich.cells import cell_len

from calibrate.cli.main import print_comparison, print_fit_summary, print_scores
from calibrate.cli.tables import column_groups

EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "examples"
INTERVAL = re.compile(r"-?\d+\.\d \[-?\d+\.\d, -?\d+\.\d\]")


def record(name: str) -> dict:
    return json.loads((EXAMPLES / name).read_text())


def interval_text(entry: dict | None) -> str | None:
    if not entry or entry.get("value") is None or not entry.get("ci") or entry["ci"][0] is None:
        return None
    return f"{entry['value']:.1f} [{entry['ci'][0]:.1f}, {entry['ci'][1]:.1f}]"


def printed(monkeypatch, capsys, columns: int, show, *arguments) -> list[str]:
    monkeypatch.setenv("COLUMNS", str(columns))
    show(*arguments, {})
    return capsys.readouterr().out.splitlines()


def fit_intervals(calibration: dict) -> list[str]:
    return [interval_text(report["metrics"]["PAC"]) for report in calibration["sets"].values()]


def score_intervals(metrics: dict) -> list[str]:
    found = []
    for model in metrics["models"].values():
        entries = [model["headline"].get(m) for m in ("PAC", "REF", "NINF")]  # the table shows raw as a value
        found += [text for text in map(interval_text, entries) if text]
    return found


CASES = {
    "fit": (print_fit_summary, "heuristic/calibration.json", fit_intervals, lambda r: list(r["sets"])),
    "score": (print_scores, "score-heuristic/metrics.json", score_intervals, lambda r: list(r["models"])),
    "compare": (print_comparison, "comparison/comparison.json", lambda r: [], lambda r: list(r["judges"])),
}


@pytest.mark.parametrize("kind", CASES)
def test_tables_fit_an_80_column_terminal_without_splitting_a_number(kind, monkeypatch, capsys):
    show, name, intervals, names = CASES[kind]
    data = record(name)
    lines = printed(monkeypatch, capsys, 80, show, data)
    table_lines = [line for line in lines if "─" in line or "   " in line.strip()]  # rules, and columns apart
    assert len(table_lines) >= 2 * len(names(data))
    assert max(cell_len(line) for line in table_lines) <= 80
    expected = intervals(data)
    whole = [match for line in lines for match in INTERVAL.findall(line)]
    assert len(expected) >= (0 if kind == "compare" else 4)
    for text in expected:  # each interval printed whole, on one line, as often as the record holds it
        assert whole.count(text) >= expected.count(text), text
    text = "\n".join(lines)
    for row_name in names(data):
        assert row_name.split("-")[0] in text


@pytest.mark.parametrize("kind", CASES)
def test_a_wide_terminal_gets_one_table(kind, monkeypatch, capsys):
    show, name, _, _ = CASES[kind]
    lines = printed(monkeypatch, capsys, 200, show, record(name))
    assert sum(line.lstrip().startswith("─") for line in lines) == 1  # one header rule: one table
    narrow = printed(monkeypatch, capsys, 80, show, record(name))
    assert sum(line.lstrip().startswith("─") for line in narrow) >= 2  # these tables need two at 80


def test_the_comparison_lists_judges_best_first(monkeypatch, capsys):
    comparison = record("comparison/comparison.json")
    lines = printed(monkeypatch, capsys, 200, print_comparison, comparison)
    table = lines[:next(i for i, line in enumerate(lines) if "recommended" in line)]
    rows = [line.split()[0] for line in table if line.split() and line.split()[0] in comparison["judges"]]
    errors = [comparison["judges"][name]["summary"]["max_abs_pac_error"] for name in rows]
    assert sorted(rows) == sorted(comparison["judges"])
    assert errors == sorted(errors) and errors[0] < errors[-1]


def test_columns_that_do_not_fit_go_into_a_second_table_in_order():
    headers = ["name", "a", "b", "c"]
    rows = [["x", "1" * 30, "2" * 30, "3" * 5]]
    assert column_groups(headers, rows, 200) == [[1, 2, 3]]
    assert column_groups(headers, rows, 60) == [[1, 3], [2]]  # c fits beside a; b does not
