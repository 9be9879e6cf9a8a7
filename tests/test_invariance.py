"""Judges built to be biased are caught by the invariance sets: a loopback judge that sides with the much
longer answer is flagged on `padding`, one that reads a bulleted list as a refusal on `markdown`, and the
plain loopback judge (which reads each answer's own words past the framing) on nothing. The shifts are
paired differences on the same pairs, checked here against the judgments themselves."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from calibrate.stats.invariance import INVARIANCE_TOLERANCE
from calibrate.stats.rules import adjusted_scores
from tests.fakes.judges import write_judge
from tests.inprocess import cli

ALL = "padding,hedging,markdown,politeness"


def pac_by_pair(rows: pd.DataFrame) -> pd.Series:
    score = adjusted_scores(rows["alignment_score"].to_numpy(float), rows["person_1_refusal"].to_numpy(bool),
                            rows["person_2_refusal"].to_numpy(bool), "v2")
    return pd.Series((score + 2) / 4 * 100, index=pd.MultiIndex.from_arrays(
        [rows["set_name"].str.split("+").str[0], rows["pair_id"]]))


def compared(base_url: str, folder):
    judges = [write_judge(folder, base_url, name=name, model=model)
              for name, model in (("long", "length-biased-judge"), ("fair", "test-judge"))]
    process = cli("compare", "--judges", ",".join(map(str, judges)), "--invariance", ALL, "--no-baselines",
                  "--limit", "12", "--bootstrap", "300", "--out", str(folder / "out"), "--cache",
                  str(folder / "cache.sqlite"), "--no-progress")
    assert process.returncode == 0, process.stderr
    return (json.loads((folder / "out" / "comparison.json").read_text()),
            pd.read_parquet(folder / "out" / "judgments.parquet"), folder / "out")


def test_a_length_biased_judge_is_flagged_on_padding_and_an_unbiased_one_is_not(openai_server, tmp_path):
    comparison, judgments, out = compared(openai_server.base_url, tmp_path)
    long, fair = comparison["judges"]["long"]["invariance"], comparison["judges"]["fair"]["invariance"]
    assert set(long) == set(fair) == set(ALL.split(","))
    padding = long["padding"]
    assert padding["flagged"] and padding["ci"][0] > INVARIANCE_TOLERANCE and padding["pac_shift"] > 20
    assert set(padding) >= {"pac_shift", "ci", "ref_shift", "ref_ci", "moved_share", "flagged"}
    assert not any(shift["flagged"] for shift in fair.values())
    assert all(shift["pac_shift"] == 0 and shift["moved_share"] == 0 for shift in fair.values())
    # the shift is the mean paired difference over the same pairs, recomputed from the judgments
    rows = judgments[(judgments["judge_name"] == "long") & (judgments["order"] == "forward")]
    base = pac_by_pair(rows[~rows["set_name"].str.contains("+", regex=False)])
    padded = pac_by_pair(rows[rows["set_name"].str.endswith("+padding")])
    shift = (padded - base.reindex(padded.index))
    assert padding["n_pairs"] == len(shift) == 48
    assert padding["pac_shift"] == pytest.approx(shift.mean())
    judgment = ["alignment_score", "person_1_refusal", "person_2_refusal"]
    before, after = (frame.set_index([frame["set_name"].str.split("+").str[0], "pair_id"])[judgment]
                     for frame in (rows[~rows["set_name"].str.contains("+", regex=False)],
                                   rows[rows["set_name"].str.endswith("+padding")]))
    moved = (after != before.reindex(after.index)).any(axis=1)
    assert padding["moved_share"] == pytest.approx(100 * float(np.mean(moved))) and moved.sum() >= (shift != 0).sum()
    assert not long["hedging"]["flagged"] and not long["politeness"]["flagged"]
    # the recommendation leaves out the flagged judge and says why
    assert comparison["recommendation"]["recommended"] == "fair"
    assert comparison["recommendation"]["excluded"]["long"].startswith("flagged bias: padding (PAC shift +")
    assert "none of whose biases is flagged" in comparison["recommendation"]["rule"]
    report = (out / "report.md").read_text()
    assert "## What moves the judge: biases" in report and (out / "figures" / "biases.png").exists()
    assert "| long | padding |" in report


def test_fit_flags_a_judge_that_reads_lists_as_refusals(openai_server, tmp_path):
    judge = write_judge(tmp_path, openai_server.base_url, name="averse", model="markdown-averse-judge")
    process = cli("fit", "--judge", str(judge), "--invariance", "markdown,padding", "--order", "both", "--limit", "8",
                  "--bootstrap", "300", "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "c.sqlite"),
                  "--no-progress")
    assert process.returncode == 0, process.stderr
    invariance = json.loads((tmp_path / "out" / "calibration.json").read_text())["invariance"]
    assert set(invariance) == {"markdown", "padding", "position"}
    markdown = invariance["markdown"]
    assert markdown["flagged"] and markdown["ref_ci"][0] > INVARIANCE_TOLERANCE and markdown["moved_share"] > 50
    assert not invariance["padding"]["flagged"] and not invariance["position"]["flagged"]
    report = (tmp_path / "out" / "report.md").read_text()
    assert "| averse | markdown |" in report and "**yes**" in report
