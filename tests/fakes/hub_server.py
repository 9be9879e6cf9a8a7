"""A loopback server speaking the part of the Hugging Face Hub HTTP API that `datasets.load_dataset` uses.

It serves dataset repositories from a local folder (ROOT/<org>/<name>/<files>) so the real `datasets`
and `huggingface_hub` clients can load `org/name` with HF_ENDPOINT pointing here: repository info,
file listings, and file downloads at a fixed commit. Unknown repositories get the hub's 404.
"""

from __future__ import annotations

import hashlib
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.fakes.openai_server import SHUTDOWN_POLL_S

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class HubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    root: Path  # set on the subclass made by serve_hub
    requests: list[str]

    def log_message(self, *args) -> None:
        """Quiet: the tests read `requests` instead."""

    def _send(self, code: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        for name, value in {"Content-Length": str(len(body)), **(headers or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, payload, code: int = 200) -> None:
        self._send(code, json.dumps(payload).encode(), {"Content-Type": "application/json"})

    def _files(self, repo: str) -> list[str]:
        base = self.root / repo
        return sorted(p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file())

    def _route(self) -> None:
        self.requests.append(f"{self.command} {self.path}")
        if self.command == "POST":
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
        parts = urllib.parse.urlparse(self.path).path.strip("/").split("/")
        if parts[:2] == ["api", "datasets"] and len(parts) >= 4:
            return self._api("/".join(parts[2:4]), parts[4:])
        if parts[0] == "datasets" and "resolve" in parts:
            at = parts.index("resolve")
            return self._file("/".join(parts[1:at]), "/".join(parts[at + 2:]))
        self._json({"error": "not found"}, 404)

    def _api(self, repo: str, rest: list[str]) -> None:
        if not (self.root / repo).is_dir():
            return self._json({"error": "Repository not found"}, 404)
        files = self._files(repo)
        if not rest or rest[0] == "revision":
            return self._json({"id": repo, "sha": COMMIT, "private": False, "gated": False, "tags": [],
                               "cardData": {}, "siblings": [{"rfilename": f} for f in files]})
        if rest[0] == "tree":
            prefix = "/".join(rest[2:])
            inside = [f for f in files if not prefix or f.startswith(prefix + "/")]
            entries = [{"type": "file", "path": f, "size": (self.root / repo / f).stat().st_size,
                        "oid": hashlib.sha1((self.root / repo / f).read_bytes()).hexdigest()} for f in inside]
            folders = sorted({str(Path(f).parent) for f in inside} - {".", prefix})
            return self._json(entries + [{"type": "directory", "path": d, "oid": COMMIT} for d in folders])
        self._json({"error": "not found"}, 404)

    def _file(self, repo: str, path: str) -> None:
        target = self.root / repo / path
        if not target.is_file():
            return self._send(404, headers={"X-Error-Code": "EntryNotFound"})
        data = target.read_bytes()
        self._send(200, data, {"ETag": f'"{hashlib.sha1(data).hexdigest()}"', "X-Repo-Commit": COMMIT})

    do_GET = do_HEAD = do_POST = _route


def serve_hub(root: Path) -> tuple[ThreadingHTTPServer, list[str]]:
    """Start the hub on a free loopback port in a daemon thread; returns the server and its request log."""
    requests: list[str] = []
    handler = type("Handler", (HubHandler,), {"root": root, "requests": requests})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, args=(SHUTDOWN_POLL_S,), daemon=True).start()
    return server, requests
