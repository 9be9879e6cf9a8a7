"""Text outputs as hostile data would abuse them: HTML in a category, model or annotator name stays text in
report.md (a Markdown viewer or notebook would run it), and a cell that starts like a spreadsheet formula
(= + - @, tab, CR) gets a leading quote in every CSV meant for spreadsheets (OWASP), while numbers, also
negative ones, stay numbers."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pandas as pd

import calibrate
from calibrate.data.calibration import sample_path
from calibrate.reports.render import Block, defused, render_markdown
from calibrate.store.labels import LabelStore
from calibrate.workflows.annotate import Session, build_study, export_labels

SCRIPT = "<img src=x onerror=alert(1)>"
FORMULA = '=HYPERLINK("http://evil.example","click")'


def cells(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as file:
        return list(csv.reader(file))


def test_markdown_escapes_html_and_references_but_keeps_plain_text(tmp_path):
    table = pd.DataFrame({"category": [SCRIPT, "Art & Culture", "&lt;b&gt;"], "PAC": [-1.5, 2.0, 3.0]})
    text = render_markdown([Block("h1", f"model {SCRIPT}"), Block("p", f"annotator <b>{SCRIPT}</b> & co"),
                            Block("table", table=table)], tmp_path / "figures", tmp_path)
    assert "<" not in text and ">" not in text
    assert "&lt;img src=x onerror=alert(1)&gt;" in text and "| Art & Culture | 2.0 |" in text
    assert "&amp;lt;b&amp;gt;" in text  # a reference in the data is shown, not decoded
    assert "| -1.5 |" in text


def test_defused_cells_and_numbers():
    for value in ("=1+1", "+1 and", "-cmd", "@SUM(A1)", "\tx", "\rx", FORMULA):
        assert defused(value) == "'" + value
    for value in ("-1.5", "+2", "-3e5", "plain", "", "a=b", -2, -0.5, None):
        assert defused(value) == value


def test_score_report_and_breakdowns_of_hostile_categories(tmp_path):
    rows = [json.loads(line) for line in sample_path("responses", "steady-model").read_text().splitlines()]
    for i, row in enumerate(rows):
        row["category"] = SCRIPT if i % 2 else FORMULA
    source = tmp_path / "hostile-model.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    calibration = calibrate.fit("heuristic", sets=["aligned-100", "unaligned-0"], out=tmp_path / "cal",
                                n_boot=100).paths["calibration"]
    result = calibrate.score("heuristic", [str(source), str(sample_path("responses", "echo-model"))],
                             calibration=calibration, out=tmp_path / "out", n_boot=100)
    report = (tmp_path / "out" / "report.md").read_text()
    assert "<img" not in report and "&lt;img src=x onerror=alert(1)&gt;" in report
    assert "<img src=x" not in (tmp_path / "out" / "report.html").read_text()
    table = cells(result.paths["by_category"])
    header = table[0]
    categories = [row[header.index("category")] for row in table[1:]]
    assert "'" + FORMULA in categories and FORMULA not in categories and SCRIPT in categories
    raw = header.index("alignment_raw")
    assert any(row[raw].startswith("-") for row in table[1:])  # a negative number stays a number
    assert pd.read_csv(result.paths["by_category"])["alignment_raw"].dtype == float
    assert cells(result.paths["leaderboard"])[0][0] and pd.read_csv(result.paths["leaderboard"]).shape[0] == 2


def test_labels_and_comparison_csv_defuse_formulas(tmp_path):
    study = build_study("sample", ["unaligned-0", "aligned-100"], sample=4, seed=1)
    with LabelStore(tmp_path / "labels.sqlite3") as store:
        session = Session(study, store, "@ann")
        session.give(0, {"score": "-2", "note": FORMULA})
        session.give(1, {"score": "1", "note": "-fine"})
    export_labels(tmp_path / "labels.sqlite3", tmp_path / "labels.csv")
    table = cells(tmp_path / "labels.csv")
    header = table[0]
    assert [row[header.index("note")] for row in table[1:]] == ["'" + FORMULA, "'-fine"]
    assert {row[header.index("annotator")] for row in table[1:]} == {"'@ann"}
    assert sorted(row[header.index("alignment_score")] for row in table[1:]) == ["-2", "1"]  # numbers stay
    jsonl = export_labels(tmp_path / "labels.sqlite3", tmp_path / "labels.jsonl")
    assert FORMULA in jsonl["note"].tolist()  # only the spreadsheet format is defused

    judge = tmp_path / "formula.toml"
    judge.write_text('extends = "heuristic"\nname = "=SUM(1+1)"\n')
    result = calibrate.compare([str(judge), "heuristic"], baselines=False, sets=["aligned-100", "unaligned-0"],
                               limit=5, out=tmp_path / "cmp", n_boot=100)
    names = [row[0] for row in cells(result.paths["leaderboard"])[1:]]
    assert "'=SUM(1+1)" in names and "=SUM(1+1)" not in names
