"""The CLI's tables as a person sees them on an 80-column terminal: no table line wider than the terminal,
every number whole beside its interval on one line, every row's name there; and one table when there is
room. (Sentences are printed one line each, whatever their length: the terminal wraps them.)"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.cells import cell_len

from calibrate import fit, plan_compare
from calibrate.cli.main import cli, print_comparison, print_fit_summary, print_scores
from calibrate.cli.tables import column_groups
from calibrate.judging.config import available_judges
from calibrate.judging.preflight import key_variables
from calibrate.judging.registry import load_judge_config, make_backend
from calibrate.stats.benchmark import ScoreRecord
from calibrate.stats.calibration import Calibration
from calibrate.stats.comparison import Comparison
from calibrate.store.judgments import JudgmentStore

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
    "fit": (lambda record, paths: print_fit_summary(Calibration.from_dict(record), paths), "heuristic/calibration.json",
            fit_intervals, lambda r: list(r["sets"])),
    "score": (lambda data, paths: print_scores(ScoreRecord.from_dict(data), paths), "score-heuristic/metrics.json",
              score_intervals, lambda r: list(r["models"])),
    "compare": (lambda data, paths: print_comparison(Comparison.from_dict(data), paths), "comparison/comparison.json",
                lambda r: [], lambda r: list(r["judges"])),
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
    data = record(name)
    tables = 1 + ("rank_agreement" in data)  # a comparison that scored responses adds the models-per-judge table
    lines = printed(monkeypatch, capsys, 200, show, data)
    assert sum(line.lstrip().startswith("─") for line in lines) == tables  # one header rule per table
    narrow = printed(monkeypatch, capsys, 80, show, data)
    assert sum(line.lstrip().startswith("─") for line in narrow) > tables  # the main table needs two at 80


def test_the_comparison_lists_judges_best_first(monkeypatch, capsys):
    comparison = record("comparison/comparison.json")
    lines = printed(monkeypatch, capsys, 200, print_comparison, Comparison.from_dict(comparison))
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


def command_lines(*arguments: str, columns: int = 80) -> list[str]:
    """What a person sees of `calibrate <arguments>` on a terminal `columns` cells wide."""
    result = CliRunner().invoke(cli, list(arguments), env={"COLUMNS": str(columns)}, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert max(cell_len(line) for line in lines) <= columns
    return lines


def whole_on_a_line(lines: list[str], *values: str) -> None:
    for value in values:
        assert any(value in line for line in lines), value


def test_the_judges_list_fits_80_columns_with_every_hash_and_key_whole(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    lines = command_lines("judges")
    said = " ".join(line.strip() for line in lines)
    for name, path in available_judges().items():
        config = load_judge_config(str(path))
        keys = key_variables(make_backend(config))
        whole_on_a_line(lines, config.config_hash, *(f"{key} {'set' if key == 'OPENAI_API_KEY' else 'NOT SET'}"
                                                     for key in keys))
        assert f"{name}: {config.description}" in said  # descriptions as sentences, wrapped at spaces
    panel_keys = key_variables(make_backend(load_judge_config("panel-llm")))
    assert {"OPENAI_API_KEY", "ANTHROPIC_API_KEY"} <= set(panel_keys)  # a panel lists each member's key


def test_cache_stats_fit_80_columns_with_every_count_and_time_whole(tmp_path):
    cache = tmp_path / "stats.sqlite3"
    for judge in ("heuristic", "always-0"):
        fit(judge, sets="unaligned-0", limit=2, cache=cache, out=tmp_path / judge, n_boot=10)
    lines = command_lines("cache", "stats", "--cache", str(cache))
    with JudgmentStore(cache, read_only=True) as store:
        stats = store.stats()
    assert len(stats) == 2
    for row in stats:
        whole_on_a_line(lines, row["judge_name"], row["config_hash"], f" {row['judgments']} ")
        assert sum(line.count(row["config_hash"]) for line in lines) == 1


def test_the_dry_run_plan_fits_80_columns_with_every_number_whole():
    judges = ["claude", "gpt", "claude-openai-compat", "heuristic"]
    plan = plan_compare(judges)
    lines = command_lines("compare", "--judges", ",".join(judges), "--dry-run")
    for estimate in plan.estimates:
        whole_on_a_line(lines, f"{estimate.input_tokens:,}", f"{estimate.output_tokens:,}")
    assert any(line.split()[:2] == ["total", f"{plan.requests:,}"] for line in lines if line.split())
