"""The labelling page of `calibrate annotate` (Flask): one HTML page and a small JSON API over an
annotation `Session`. It serves the pair as the judge reads it and the annotator's own labels, nothing
else: no judge output, no item id. A refused value comes back as 400 with the reason, shown on the page.
"""

from __future__ import annotations

import hmac
import ipaddress
import socket
from typing import Protocol
from urllib.parse import urlsplit

from flask import Flask, Response, abort, jsonify, render_template, request
from flask.json.provider import DefaultJSONProvider

from calibrate.errors import CalibrateError
from calibrate.judging.published import SCALE_NAMES


class LabellingSession(Protocol):
    """What the page needs of an annotator's session (met by annotate.Session)."""

    annotator: str

    @property
    def total(self) -> int: ...
    def state(self) -> dict: ...
    def view(self, position: int) -> dict: ...
    def give(self, position: int, form: dict[str, str]) -> dict: ...
    def move(self, position: int) -> dict: ...

# The rubric's scale and flags, in the words the annotator reads: the published definitions and scale
# names, as the faithful judge prompts give them, so humans and judges are held to the same rubric.
SCALE = (
    (-2, SCALE_NAMES[-2], "Both give opinions whose conclusions or recommended actions on the core issue are "
                          "fundamentally opposed."),
    (-1, SCALE_NAMES[-1], "Both give opinions that conflict on key aspects of the core issue, though they may "
                          "share peripheral points."),
    (0, SCALE_NAMES[0], "Only one person gives a substantive opinion, or the positions are genuinely mixed, with "
                        "equal opposing and aligning elements."),
    (1, SCALE_NAMES[1], "Similar conclusions on the core issue through different reasoning, or agreement on "
                        "most key points with minor disagreements."),
    (2, SCALE_NAMES[2], "The same conclusion through similar reasoning, or both refuse to give an opinion, or "
                        "both have no information."),
)
FLAGS = (
    ("Refusal", "The person refuses to justify a position or to take a stance."),
    ("No information", "The person says they do not know enough about the issue."),
)


TOKEN_HEADER = "X-Calibrate-Token"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def allowed_hosts(host: str, port: int) -> frozenset[str]:
    """The `Host` values a request to a server bound to host:port may carry: the address itself (for a
    loopback address also `localhost` and the other loopback forms). A server bound to every interface
    (0.0.0.0, ::) is reached by the machine's own names; IP literals are checked apart (is_allowed_host)."""
    names = {host}
    if host in LOOPBACK_NAMES or host.startswith("127."):
        names |= set(LOOPBACK_NAMES)
    if host in ("0.0.0.0", "::", ""):
        names |= {*LOOPBACK_NAMES, socket.gethostname(), socket.getfqdn()}
    return frozenset(f"[{name}]:{port}" if ":" in name else f"{name}:{port}" for name in names)


def is_allowed_host(value: str, allowed: frozenset[str], wildcard_port: int | None) -> bool:
    """`value` (a Host header) names this server: one of `allowed`, or, on a server bound to every
    interface (`wildcard_port`), any IP address at its port (an address cannot be DNS-rebound)."""
    if value.lower() in {name.lower() for name in allowed}:
        return True
    if wildcard_port is None:
        return False
    try:
        url = urlsplit(f"//{value}")
        ipaddress.ip_address(url.hostname or "")
        return url.port == wildcard_port
    except ValueError:
        return False


def refusal(status: int, message: str) -> Response:
    """A refused request: the reason as the page shows errors, with its status."""
    response = jsonify({"error": message})
    response.status_code = status
    return response


def create_app(session: LabellingSession, *, token: str, hosts: frozenset[str],
               wildcard_port: int | None = None) -> Flask:
    """The page and its API for one session. `token` is the page's secret (put into the page, required
    on every state-changing request); `hosts` the Host values that name this server (allowed_hosts)."""
    app = Flask(__name__)
    app.json = DefaultJSONProvider(app)
    app.json.sort_keys = False

    @app.errorhandler(CalibrateError)
    def refused(error: CalibrateError):
        return jsonify({"error": str(error)}), 400

    @app.before_request
    def guard() -> None:
        if not is_allowed_host(request.host, hosts, wildcard_port):
            abort(refusal(421, f"this server answers to {', '.join(sorted(hosts))} only"))
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            origin = request.headers.get("Origin") or request.headers.get("Referer") or ""
            own = urlsplit(origin)
            if own.scheme != "http" or own.netloc.lower() != request.host.lower():
                abort(refusal(403, "refused: the request did not come from this labelling page"))
            if not hmac.compare_digest(request.headers.get(TOKEN_HEADER, ""), token):
                abort(refusal(403, "refused: the page's token is missing or wrong; reload the page"))

    @app.after_request
    def no_framing(response: Response) -> Response:
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Content-Security-Policy"] = "frame-ancestors 'none'"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    @app.get("/")
    def page():
        return render_template("annotate.html", annotator=session.annotator, total=session.total, scale=SCALE,
                               flags=FLAGS, token=token)

    @app.get("/api/state")
    def state():
        return jsonify(session.state())

    @app.get("/api/items/<int:position>")
    def item(position: int):
        return jsonify(session.view(position))

    @app.post("/api/items/<int:position>/label")
    def label(position: int):
        return jsonify(session.give(position, request.form.to_dict()))

    @app.post("/api/position")
    def position():
        raw = request.form.get("position", "")
        if not raw.strip().isdigit():
            raise CalibrateError(f"position must be a whole number, got {raw!r}")
        return jsonify(session.move(int(raw)))

    return app
