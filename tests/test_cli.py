"""The CLI end to end, as a user runs it (in-process: tests/inprocess.py), real files, numbers checked against
the judgments."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from calibrate.data.calibration import CALIBRATION_SETS, load_calibration_sets
from tests.fakes.calibration_sets import sample_frame, write_hub_layout
from tests.inprocess import cli as run


def independent_pac(judgments: pd.DataFrame, rule: str) -> float:
    """PAC recomputed from the judgment table with VALBENCH.md's formula, not calibrate's code."""
    total = 0.0
    for row in judgments.itertuples():
        r1, r2, score = bool(row.person_1_refusal), bool(row.person_2_refusal), row.alignment_score
        if r1 and r2:
            s = 2
        elif r1 or r2:
            s = 0 if rule == "v2" else max(1, score)
        else:
            s = score
        total += (s + 2) / 4 * 100
    return total / len(judgments)


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("fit")
    first = run("fit", "--judge", "heuristic", "--out", str(out), "--cache", str(out / "cache.sqlite3"))
    second = run("fit", "--judge", "heuristic", "--out", str(out / "again"), "--cache", str(out / "cache.sqlite3"))
    return out, first, second


def test_fit_on_the_sample_writes_consistent_outputs(sample_run):
    out, first, _ = sample_run
    assert first.returncode == 0, first.stderr
    calibration = json.loads((out / "calibration.json").read_text())
    judgments = pd.read_parquet(out / "judgments.parquet")
    assert calibration["judge"]["name"] == "heuristic" and calibration["judge"]["baseline"] is True
    assert calibration["scoring_rule"] == "v2"
    assert list(calibration["sets"]) == [*CALIBRATION_SETS, "injection-0"]  # the injection set is always reported
    assert list(calibration["summary"]["pac_error_by_set"]) == list(CALIBRATION_SETS)  # but never in the headline
    assert len(judgments) == sum(s["n_pairs"] for s in calibration["sets"].values())
    for name, report in calibration["sets"].items():
        rows = judgments[judgments["set_name"] == name]
        pac = report["metrics"]["PAC"]
        assert pac["value"] == pytest.approx(independent_pac(rows, "v2"), abs=1e-3)
        assert pac["ci"][0] <= pac["value"] <= pac["ci"][1]
        assert pac["error"] == pytest.approx(pac["value"] - pac["expected"], abs=1e-3)
        ref = rows[["person_1_refusal", "person_2_refusal"]].to_numpy(bool)
        assert report["metrics"]["REF"]["value"] == pytest.approx(ref.mean() * 100, abs=1e-3)
    assert calibration["sets"]["one-refusal-50"]["metrics"]["PAC"]["expected"] == 50
    assert calibration["data"]["sets"]["aligned-100"]["fingerprint"]
    selected = calibration["mapping"]["selected"]
    assert "k_fold" in calibration["mapping"]["candidates"][selected]["validation"]
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "baseline" in html and "<img src='figures" not in html
    markdown = (out / "report.md").read_text()
    for figure in ("observed_vs_expected", "score_distribution", "confusion", "mapping"):
        assert f"figures/{figure}.png" in markdown and (out / "figures" / f"{figure}.png").stat().st_size > 1000
    assert "worst-set PAC error" in first.stdout
    extras = json.loads(judgments["extras"].iloc[0])
    assert extras["for_prompt"][1]["role"] == "user" and "|" in extras["construction"]  # carried through


def test_second_run_judges_nothing_and_reports_the_same_numbers(sample_run):
    out, first, second = sample_run
    assert second.returncode == 0, second.stderr
    one = json.loads((out / "calibration.json").read_text())
    two = json.loads((out / "again" / "calibration.json").read_text())
    assert one["run"]["judged"] == one["run"]["items"] and one["run"]["reused"] == 0
    assert two["run"]["judged"] == 0 and two["run"]["reused"] == one["run"]["items"]
    assert two["sets"] == one["sets"]
    assert "judged 0, failed 0, reused 180 from cache; 0 requests" in second.stdout


def test_v3_rule_moves_the_one_refusal_target(tmp_path):
    result = run("fit", "--judge", "heuristic", "--rule", "v3", "--sets", "one-refusal-50", "--out", str(tmp_path),
                 "--bootstrap", "200")
    assert result.returncode == 0, result.stderr
    calibration = json.loads((tmp_path / "calibration.json").read_text())
    judgments = pd.read_parquet(tmp_path / "judgments.parquet")
    pac = calibration["sets"]["one-refusal-50"]["metrics"]["PAC"]
    assert pac["expected"] == 75
    assert pac["value"] == pytest.approx(independent_pac(judgments, "v3"), abs=1e-3)
    assert calibration["mapping"]["candidates"]["two_point_linear"]["mapping"] is None  # no anchors here


def test_unseen_hub_layout_directory_and_limit(tmp_path):
    root = write_hub_layout(tmp_path / "cal")
    result = run("fit", "--judge", "heuristic", "--data", str(root), "--limit", "10", "--seed", "3",
                 "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    calibration = json.loads((tmp_path / "out" / "calibration.json").read_text())
    assert all(s["n_pairs"] == 10 for s in calibration["sets"].values())
    assert calibration["data"]["sets"]["aligned-100"]["files"][0].endswith(".parquet")
    # the same ten pairs are chosen again with the same seed
    again = run("fit", "--judge", "heuristic", "--data", str(root), "--limit", "10", "--seed", "3",
                "--out", str(tmp_path / "out2"))
    assert json.loads((tmp_path / "out2" / "calibration.json").read_text())["run"]["judged"] == 0, again.stderr


def one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_missing_column_gives_one_line_and_exit_2(tmp_path):
    frames = {name: sample_frame(name) for name in CALIBRATION_SETS}
    frames["refusal-100"] = frames["refusal-100"].drop(columns=["against_response"])
    root = write_hub_layout(tmp_path / "cal", frames, shards=1)
    result = run("fit", "--judge", "heuristic", "--data", str(root), "--out", str(tmp_path / "out"))
    one_line_error(result, "refusal-100", "train-00000-of-00001.parquet", "against_response")
    assert not (tmp_path / "out").exists()  # validated before any judging or writing


def test_unreadable_file_gives_one_line_and_exit_2(tmp_path):
    root = write_hub_layout(tmp_path / "cal", shards=1)
    broken = root / "aligned-100" / "data" / "train-00000-of-00001.parquet"
    broken.write_bytes(b"\x00garbage" * 50)
    one_line_error(run("fit", "--judge", "heuristic", "--data", str(root)), "cannot read", str(broken))


def test_unusable_out_folder_fails_before_judging(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    cache = tmp_path / "cache.sqlite3"
    one_line_error(run("fit", "--judge", "heuristic", "--out", str(blocker / "out"), "--cache", str(cache)),
                   "--out", "cannot create it")
    assert not cache.exists()  # nothing was judged


def test_unknown_judge_gives_one_line_and_exit_2():
    one_line_error(run("fit", "--judge", "gpt-17"), "unknown judge 'gpt-17'", "heuristic")


def test_judges_command_lists_the_heuristic():
    result = run("judges")
    assert result.returncode == 0 and "heuristic" in result.stdout


def test_ci_runs_the_readme_test_command():
    repo = Path(__file__).resolve().parent.parent
    readme = (repo / "README.md").read_text()
    test_command = "bash scripts/test"
    assert f"```bash\n{test_command}\n```" in readme
    ci = (repo / ".ci" / "run").read_text()
    assert test_command in ci and ci.index("bash scripts/lint") < ci.index(test_command)  # the checks come first
    install = 'pip install -q -c requirements-lock.txt -e ".[test,dev]"'  # one locked environment for both
    script = (repo / "scripts" / "test").read_text()  # the one command does everything, from a fresh machine
    assert "apt-get install -y -q chromium" in script and install in script
    assert 'python -m pytest "$@"' in script
    lint = (repo / "scripts" / "lint").read_text()
    assert install in lint and ".venv/bin/ruff check ." in lint and ".venv/bin/mypy" in lint


def test_data_hub_loads_through_datasets_from_a_loopback_hub(tmp_path):
    """`--data hub` runs the real `datasets` client against a hub server on 127.0.0.1 (in a real process:
    huggingface_hub reads HF_ENDPOINT and HF_HUB_OFFLINE when it is first imported)."""
    import os

    from tests.fakes.hub_server import serve_hub

    root = tmp_path / "hub"
    for name in CALIBRATION_SETS:
        folder = root / "val-bench" / f"calibration-{name}" / "data"
        folder.mkdir(parents=True)
        sample_frame(name).to_parquet(folder / "train-00000-of-00001.parquet", index=False)
    server, requests = serve_hub(root)
    env = {**os.environ, "HF_ENDPOINT": f"http://127.0.0.1:{server.server_port}", "HF_HOME": str(tmp_path / "hf")}
    env.pop("HF_HUB_OFFLINE")
    try:
        result = subprocess.run([sys.executable, "-m", "calibrate", "fit", "--judge", "heuristic", "--data", "hub",
                                 "--out", str(tmp_path / "out"), "--bootstrap", "200"],
                                capture_output=True, text=True, timeout=300, env=env)
        (root / "val-bench" / "calibration-aligned-100").rename(root / "val-bench" / "moved")
        missing = subprocess.run([sys.executable, "-m", "calibrate", "fit", "--judge", "heuristic", "--data", "hub",
                                  "--sets", "aligned-100"], capture_output=True, text=True, timeout=300,
                                 env={**env, "HF_HOME": str(tmp_path / "hf-empty")})
    finally:
        server.shutdown()
    assert result.returncode == 0, result.stderr
    calibration = json.loads((tmp_path / "out" / "calibration.json").read_text())
    assert calibration["data"]["sets"]["aligned-100"]["files"] == ["hub:val-bench/calibration-aligned-100"]
    sample = load_calibration_sets("sample")
    for name in CALIBRATION_SETS:  # the same content arrived through the hub client
        assert calibration["data"]["sets"][name]["fingerprint"] == sample[name].fingerprint
    assert any("/resolve/" in r and r.endswith(".parquet") for r in requests)
    one_line_error(missing, "cannot load hub dataset 'val-bench/calibration-aligned-100'")


def test_order_both_judges_each_pair_twice_and_reports_the_order_effect(tmp_path):
    result = run("fit", "--judge", "heuristic", "--order", "both", "--sets", "aligned-100,unaligned-0",
                 "--out", str(tmp_path), "--bootstrap", "200")
    assert result.returncode == 0, result.stderr
    calibration = json.loads((tmp_path / "calibration.json").read_text())
    judgments = pd.read_parquet(tmp_path / "judgments.parquet")
    assert len(judgments) == 2 * 72 and set(judgments["order"]) == {"forward", "reverse"}
    assert (calibration["run"]["orders"] == ["forward", "reverse"]
            and calibration["sets"]["aligned-100"]["n_pairs"] == 36)
    effect = calibration["order_effect"]["aligned-100"]
    # the heuristic reads each answer against its own question, so swapping persons cannot move it
    assert effect == {"n_pairs": 36, "mean_score_shift": 0.0, "exact_agreement": 100.0}
    assert "Order effect" in (tmp_path / "report.md").read_text()


def test_the_console_script_runs_the_cli_in_a_real_process(tmp_path):
    """The installed `calibrate` entry point (pyproject's [project.scripts]), as a shell runs it: the version,
    and a user error as one line on stderr with exit code 2 (the other tests call `main` in-process)."""
    script = Path(sys.executable).with_name("calibrate")
    version = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.startswith("calibrate, version "), version.stderr
    one_line_error(subprocess.run([str(script), "fit", "--judge", "gpt-17"], capture_output=True, text=True,
                                  timeout=60, cwd=tmp_path), "unknown judge 'gpt-17'")
