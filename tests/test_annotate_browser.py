"""`calibrate annotate` as a person uses it: the real server (the CLI), driven in headless Debian
chromium with the keyboard, then the export fed to `calibrate compare --human` through the CLI.

Needs /usr/bin/chromium (`scripts/test`, the test command, installs Debian's chromium when it is
missing), never skipped there.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score

from calibrate.data.labels import LABEL_FLAGS
from calibrate.stats.metrics import per_pair_values
from tests.inprocess import cli

CHROMIUM = "/usr/bin/chromium"
JUDGE_FIELDS = ("alignment_score", "core_position", "key_points")
SETS = "unaligned-0,aligned-100"
SCORES = (-2, -1, 0, 1, 2)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(labels: Path, annotator: str) -> tuple[subprocess.Popen, str]:
    """`calibrate annotate` in a process of its own, once it answers."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "calibrate", "annotate", "--data", "sample", "--sets", SETS, "--sample", "8",
         "--stratify", "set", "--seed", "3", "--labels", str(labels), "--annotator", annotator, "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url + "api/state", timeout=1).read()
            return process, url
        except OSError:
            if process.poll() is not None:
                raise AssertionError(process.stderr.read()) from None
            time.sleep(0.1)
    process.kill()
    raise AssertionError("the annotate server did not answer")


def stop(process: subprocess.Popen) -> None:
    """As a person stopping it would, or a crash: no chance to save anything more."""
    os.kill(process.pid, signal.SIGKILL)
    process.wait()


def page_token(url: str) -> str:
    """The secret token the page carries (every label must come with it, from the page's own origin)."""
    page = urllib.request.urlopen(url, timeout=5).read().decode()
    return re.search(r'<meta name="calibrate-token" content="([^"]+)">', page).group(1)


def post(url: str, fields: dict, token: str) -> dict:
    origin = "{0.scheme}://{0.netloc}".format(urllib.parse.urlsplit(url))
    request = urllib.request.Request(url, data=urllib.parse.urlencode(fields).encode(), method="POST",
                                     headers={"Origin": origin, "X-Calibrate-Token": token})
    return json.loads(urllib.request.urlopen(request, timeout=5).read())


def calibrate_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    result = cli(*args, cwd=cwd)
    assert result.returncode == 0, result.stderr
    return result


def test_label_three_pairs_by_keyboard_resume_export_and_compare(tmp_path):
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "install Debian's chromium (apt-get install chromium), as scripts/test does"
    labels = tmp_path / "labels.sqlite3"
    server, url = start_server(labels, "ann")
    second, second_url = start_server(labels, "bob")  # a second annotator, into the same file at the same time
    bodies: list[str] = []
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("response", lambda response: bodies.append(response.url)
                    if response.request.method == "GET" else None)
            page.goto(url)
            progress = page.locator("#progress")
            progress.filter(has_text="pair 1 of 8").wait_for()
            # pair 1: +2, person 1 refuses; pair 2: -2, person 2 has no information;
            # pair 3: 0, person 1 has no information, with a note typed after `n`
            for number, (keys, note) in enumerate(((["5", "q"], None), (["1", "s"], None), (["3", "a"], "unsure")), 2):
                for key in keys:
                    page.keyboard.press(key)
                if note:
                    page.keyboard.press("n")
                    page.keyboard.type(note)
                    page.keyboard.press("Escape")
                page.keyboard.press("Enter")
                progress.filter(has_text=f"pair {number} of 8").wait_for()
            # meanwhile the second annotator labels every pair (through the same API the page uses)
            token = page_token(second_url)
            for position in range(8):
                shown_pair = json.loads(urllib.request.urlopen(f"{second_url}api/items/{position}", timeout=5).read())
                assert shown_pair["label"] is None  # another annotator's labels are never shown
                post(f"{second_url}api/items/{position}/label",
                     {"score": SCORES[position % 5], **({"refusal_1": "on"} if position % 3 == 0 else {}),
                      **({"no_info_2": "on"} if position % 4 == 1 else {})}, token)
            page.keyboard.press("Enter")  # no score chosen: refused, with the reason on the page
            page.locator("#error").filter(has_text="choose a score").wait_for()
            assert progress.inner_text() == "pair 4 of 8"

            page.reload()
            progress.filter(has_text="pair 4 of 8").wait_for()  # resumed where it stopped
            assert page.locator("#labelled").inner_text() == "3"
            page.keyboard.press("ArrowLeft")
            progress.filter(has_text="pair 3 of 8").wait_for()
            assert page.locator("#score_3").is_checked() and page.locator("#no_info_1").is_checked()
            assert not page.locator("#refusal_1").is_checked() and page.locator("#note").input_value() == "unsure"
            page.keyboard.press("ArrowLeft")
            progress.filter(has_text="pair 2 of 8").wait_for()
            assert page.locator("#score_1").is_checked() and page.locator("#no_info_2").is_checked()

            # blind: neither the page nor anything it fetched names a judge field
            fetched = [urllib.request.urlopen(address, timeout=5).read().decode() for address in set(bodies)]
            shown = page.content()
            browser.close()
    finally:
        stop(server)
        stop(second)
    assert len(fetched) >= 4 and any("answer_1" in text for text in fetched)
    for text in [shown, *fetched]:
        assert not any(field in text for field in JUDGE_FIELDS)


    calibrate_cli("annotate", "export", "--labels", str(labels), "--out", "labels.csv", cwd=tmp_path)
    exported = pd.read_csv(tmp_path / "labels.csv")
    mine = exported[exported["annotator"] == "ann"].set_index("item")
    assert len(mine) == 3 and len(exported) == 11
    given = sorted(zip(mine["alignment_score"], mine["person_1_refusal"], mine["person_2_has_no_information"],
                       mine["person_1_has_no_information"], mine["note"].fillna(""), strict=True))
    assert given == [(-2, False, True, False, ""), (0, False, False, True, "unsure"), (2, True, False, False, "")]

    calibrate_cli("compare", "--judges", "heuristic", "--no-baselines", "--sets", SETS, "--human", "labels.csv",
                  "--bootstrap", "200", "--out", "cmp", "--no-progress", cwd=tmp_path)
    humans = json.loads((tmp_path / "cmp" / "comparison.json").read_text())["humans"]
    judged = pd.read_parquet(tmp_path / "cmp" / "judgments.parquet")
    judged = judged.assign(item=judged["set_name"] + "/" + judged["pair_id"].astype(str)).set_index("item")
    raters = {name: group.set_index("item") for name, group in exported.groupby("annotator")}
    raters["heuristic"] = judged
    rows = {(r["rater_a"], r["rater_b"], r["field"]): r for r in humans["table"]}
    rows |= {(b, a, field): r for (a, b, field), r in list(rows.items()) if {a, b} == {"ann", "bob"}}
    for a, b in (("ann", "bob"), ("heuristic", "ann"), ("heuristic", "bob")):
        shared = raters[a].index.intersection(raters[b].index)
        x, y = raters[a].loc[shared], raters[b].loc[shared]
        score = rows[(a, b, "score")]
        assert score["n"] == len(shared)
        assert score["kappa_quadratic"] == pytest.approx(
            cohen_kappa_score(x["alignment_score"], y["alignment_score"], labels=SCORES, weights="quadratic"), abs=1e-9)
        assert score["kappa"] == pytest.approx(
            cohen_kappa_score(x["alignment_score"], y["alignment_score"], labels=SCORES), abs=1e-9)
        for field, columns in (("refusal", LABEL_FLAGS[:2]), ("no_information", LABEL_FLAGS[2:])):
            fx = np.concatenate([x[c].astype(bool) for c in columns])
            fy = np.concatenate([y[c].astype(bool) for c in columns])
            row = rows[(a, b, field)]
            assert row["n"] == 2 * len(shared)
            assert row["agreement"] == pytest.approx(100 * np.mean(fx == fy), abs=1e-9)
            assert row["kappa"] == pytest.approx(cohen_kappa_score(fx, fy, labels=[False, True]), abs=1e-9)
            low, high = row["ci"]["agreement"]
            assert low <= row["agreement"] <= high
    for name in ("ann", "bob"):
        rater = raters[name]
        pac = per_pair_values(rater["alignment_score"], *(rater[c].astype(bool) for c in LABEL_FLAGS), "v2")["PAC"]
        assert humans["pac"][name] == pytest.approx(pac.mean(), abs=1e-4)
    assert ("heuristic", "consensus", "score") in rows and humans["leaderboard"][0]["rater"] == "humans"
    assert "Agreement with human labels (Table 4)" in (tmp_path / "cmp" / "report.md").read_text()
