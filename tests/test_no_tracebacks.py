"""What used to end in a traceback ends in one line: a 2,000-deep `extends` chain, a full disk (files, the
outputs, SQLite's "database or disk is full", which is no corruption), and SIGTERM mid-run, which stops as
Ctrl-C does (claims released, finished judgments kept, exit 143)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time

import pandas as pd
import pytest

import calibrate
from calibrate.errors import CalibrateError
from calibrate.judging.config import MAX_EXTENDS_DEPTH
from calibrate.judging.registry import load_judge_config
from calibrate.store.labels import LabelStore
from calibrate.store.sqlite import sqlite_error
from calibrate.workflows.annotate import Session, build_study
from tests.inprocess import cli
from tests.test_faults import (  # noqa: F401  (fixtures)
    PROCESS,
    api_key,
    assert_clean,
    assert_sound,
    calibration,
    count,
    fit_args,
    rows,
    run,
    server,
    write_judge,
)


def test_a_deep_extends_chain_is_one_line(tmp_path, monkeypatch):
    folder = tmp_path / "judges"
    (folder / "deep").mkdir(parents=True)
    # `calibrate judges` lists judges/*.toml: there, the chain's first link, its deepest links within the limit
    # and just past it, and its 2,000th; the links between them live in judges/deep/ (listing 2,000 links
    # would walk 2,000 chains)
    listed = {0, MAX_EXTENDS_DEPTH - 2, MAX_EXTENDS_DEPTH - 1, 1999}
    files = [(folder if depth in listed else folder / "deep") / f"j{depth}.toml" for depth in range(2000)]
    files[0].write_text('extends = "heuristic"\n')
    for base, file in zip(files, files[1:], strict=False):
        file.write_text(f'extends = "{os.path.relpath(base, file.parent)}"\n')
    with pytest.raises(CalibrateError, match=f"more than {MAX_EXTENDS_DEPTH} judges deep"):
        load_judge_config(str(folder / "j1999.toml"))
    assert load_judge_config(str(folder / f"j{MAX_EXTENDS_DEPTH - 2}.toml")).backend == "heuristic"  # within the limit
    monkeypatch.delenv("CALIBRATE_JUDGES_DIR")
    for command in (("fit", "--judge", "j1999", "--limit", "2", "--no-progress"), ("judges",)):
        result = cli(*command, cwd=tmp_path)
        assert "Traceback" not in result.stderr and "RecursionError" not in result.stderr + result.stdout
        if command[0] == "fit":
            assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
            assert "j1999.toml: 'extends' goes more than" in result.stderr
        else:
            assert result.returncode == 0 and "goes more than" in result.stdout


def test_a_full_disk_is_one_line_and_loses_nothing(tmp_path, monkeypatch):
    study = build_study("sample", ["unaligned-0"], sample=3, seed=1)
    labels = tmp_path / "labels.sqlite3"
    with LabelStore(labels) as store:
        Session(study, store, "ann").give(0, {"score": "1"})
    (tmp_path / "full.csv").symlink_to("/dev/full")  # every write: ENOSPC
    result = cli("annotate", "export", "--labels", str(labels), "--out", str(tmp_path / "full.csv"), cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: disk full while writing") and "nothing lost" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1

    out = tmp_path / "out"
    calibrate.fit("heuristic", sets=["aligned-100", "unaligned-0"], limit=4, out=out, n_boot=100)
    before = {path: path.read_bytes() for path in out.rglob("*") if path.is_file()}

    def no_space(self, path, *args, **kwargs):  # as pyarrow says it: an OSError without errno
        raise OSError(f"error writing {path}: No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", no_space)
    with pytest.raises(CalibrateError, match=r"disk full while writing the outputs into out .*out; nothing lost"):
        calibrate.fit("heuristic", sets=["aligned-100", "unaligned-0"], limit=4, out=out,
                      n_boot=100)
    assert {path: path.read_bytes() for path in out.rglob("*") if path.is_file()} == before


def test_sqlite_disk_full_is_worded_as_disk_full_not_corruption(tmp_path):
    message = str(sqlite_error(tmp_path / "c.sqlite3", "judgment cache", sqlite3.OperationalError(
        "database or disk is full")))
    assert message.startswith("disk full while writing judgment cache") and "corrupt" not in message
    study = build_study("sample", ["unaligned-0"], sample=3, seed=1)
    with LabelStore(tmp_path / "labels.sqlite3") as store:
        session = Session(study, store, "ann")
        session.give(0, {"score": "1", "note": "kept"})
        pages = store._db.execute("PRAGMA page_count").fetchone()[0]
        store._db.execute(f"PRAGMA max_page_count = {pages}")  # the file may grow no more: SQLITE_FULL
        flags = dict.fromkeys(("refusal_1", "refusal_2", "no_info_1", "no_info_2"), False)
        with pytest.raises(CalibrateError, match="disk full while writing labels .*nothing lost") as raised:
            for i in range(1000):
                store.put(f"unaligned-0/{i}", "bob", 1, flags, "x" * 1999, 1.0)
        assert "corrupt" not in str(raised.value)
        assert session.view(0)["label"]["note"] == "kept"


def test_sigterm_mid_run_stops_like_ctrl_c_and_releases_its_claims(server, tmp_path):  # noqa: F811
    total = 40
    server.latency_s = 0.05
    judge = write_judge(tmp_path, server.base_url)
    out, cache = tmp_path / "out", tmp_path / "c.sqlite3"
    args = fit_args(judge, out, cache, total // 4)
    process = subprocess.Popen([*PROCESS, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while len(server.log) < 12 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143, stderr
    assert [line for line in stderr.splitlines() if line.strip()] == [
        "terminated; finished judgments are kept in the cache"]
    assert rows(cache, "SELECT COUNT(*) FROM leases") == [(0,)]  # its claims released
    kept = count(cache)
    assert 10 <= kept < total and count(cache, "failures") == 0
    asked_before = len(server.log)
    assert_clean(run(args))
    assert len(server.log) - asked_before == total - kept  # only the rest
    assert calibration(out)["run"]["reused"] == kept
    assert_sound(cache)
