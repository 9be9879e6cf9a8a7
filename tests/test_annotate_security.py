"""`calibrate annotate` as a hostile web page or a second server would use it: a label POST from another
origin or without the page's token, a request naming a foreign Host (DNS rebinding), framing, a second
server for the same annotator, and annotator names that only look alike. The real server (the CLI)."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import urllib.parse

import pytest

from calibrate.errors import CalibrateError
from calibrate.store.labels import LabelStore
from calibrate.workflows.annotate import Session, annotator_name, build_study
from tests.test_annotate_browser import page_token, start_server, stop


def request(url: str, method: str = "GET", fields: dict | None = None,
            headers: dict | None = None) -> tuple[int, dict[str, str], str]:
    """One raw request (http.client: the Host header is whatever `headers` say)."""
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
    body = urllib.parse.urlencode(fields).encode() if fields is not None else None
    all_headers = {"Content-Type": "application/x-www-form-urlencoded", **(headers or {})}
    connection.request(method, parts.path, body=body, headers=all_headers)
    reply = connection.getresponse()
    result = reply.status, dict(reply.getheaders()), reply.read().decode()
    connection.close()
    return result


def state(url: str) -> dict:
    return json.loads(request(url + "api/state")[2])


def test_only_the_page_itself_may_label_move_or_read(tmp_path):
    server, url = start_server(tmp_path / "labels.sqlite3", "ann")
    try:
        own = "{0.scheme}://{0.netloc}".format(urllib.parse.urlsplit(url))
        token = page_token(url)
        port = urllib.parse.urlsplit(url).port
        label = {"score": "2", "refusal_1": "on"}
        forged = [
            {"Origin": f"http://127.0.0.1:{port + 1}", "X-Calibrate-Token": token},  # another local site
            {"Origin": "http://evil.example", "X-Calibrate-Token": token},
            {"Referer": f"http://localhost:{port + 1}/attack.html", "X-Calibrate-Token": token},
            {"X-Calibrate-Token": token},  # neither Origin nor Referer
            {"Origin": own},  # no token
            {"Origin": own, "X-Calibrate-Token": token[:-1] + ("x" if token[-1] != "x" else "y")},
        ]
        for headers in forged:
            for path, fields in (("api/items/0/label", label), ("api/position", {"position": "5"})):
                status, _, body = request(url + path, "POST", fields, headers)
                assert status == 403 and "refused" in json.loads(body)["error"], (headers, body)
        assert state(url) == {"position": 0, "total": 8, "labelled": 0}  # nothing changed

        for host in ("evil.example", f"evil.example:{port}", f"127.0.0.1:{port + 1}", "rebind.attacker.test"):
            status, _, body = request(url + "api/items/0", headers={"Host": host})
            assert status == 421 and "answer_1" not in body, host  # a rebound name reads no pair
            status, _, _ = request(url + "api/items/0/label", "POST", label,
                                   {"Host": host, "Origin": f"http://{host}", "X-Calibrate-Token": token})
            assert status == 421
        assert state(url)["labelled"] == 0

        status, headers, page = request(url)
        assert status == 200 and token in page
        assert headers["X-Frame-Options"] == "DENY"
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
        status, headers, _ = request(url + "api/items/0/label", "POST", label,
                                     {"Origin": own, "X-Calibrate-Token": token})
        assert status == 200 and headers["X-Frame-Options"] == "DENY"
        status, _, _ = request(url + "api/position", "POST", {"position": "3"},
                               {"Referer": url, "X-Calibrate-Token": token})  # Referer alone names the origin
        assert status == 200
        localhost = url.replace("127.0.0.1", "localhost")  # loopback by name is the same server
        assert request(localhost + "api/state", headers={"Host": f"localhost:{port}"})[0] == 200
        assert state(url) == {"position": 3, "total": 8, "labelled": 1}

        restarted_token = page_token(url)
        assert restarted_token == token  # one token per server, the same on a reload
    finally:
        stop(server)
    again, again_url = start_server(tmp_path / "labels.sqlite3", "ann")  # the first is gone: its lock is taken over
    try:
        assert page_token(again_url) != token  # a fresh secret per server
        assert state(again_url) == {"position": 3, "total": 8, "labelled": 1}
    finally:
        stop(again)


def test_a_second_server_for_the_same_annotator_is_refused_naming_the_first(tmp_path):
    labels = tmp_path / "labels.sqlite3"
    first, url = start_server(labels, "ann")
    try:
        result = subprocess.run(
            [sys.executable, "-m", "calibrate", "annotate", "--data", "sample", "--sets", "unaligned-0,aligned-100",
             "--sample", "8", "--stratify", "set", "--seed", "3", "--labels", str(labels), "--annotator", "ann",
             "--port", "0"], capture_output=True, text=True, timeout=60)
        assert result.returncode == 2 and "Traceback" not in result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert f"process {first.pid}" in lines[0] and url in lines[0] and "'ann'" in lines[0]
    finally:
        stop(first)


def test_annotator_names_are_normalised_and_visible(tmp_path):
    assert annotator_name("  ａｄａ ") == "ada"  # full-width letters are the same name (NFKC)
    assert annotator_name("José Núñez") == "José Núñez"
    for name in ("ada\u200b", "a\u202eda", "ada\x00", "ad\ta", "\u2063"):
        with pytest.raises(CalibrateError, match="invisible or control character|must be a name"):
            annotator_name(name)
    study = build_study("sample", ["unaligned-0"], sample=3, seed=1)
    with LabelStore(tmp_path / "labels.sqlite3") as store:
        assert Session(study, store, "ａｄａ").annotator == "ada"
        with pytest.raises(CalibrateError, match="U\\+200B"):
            Session(study, store, "ada\u200b")
