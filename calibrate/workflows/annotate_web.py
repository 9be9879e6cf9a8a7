"""The labelling page of `calibrate annotate` (Flask): one HTML page and a small JSON API over an
annotation `Session`. It serves the pair as the judge reads it and the annotator's own labels, nothing
else: no judge output, no item id. A refused value comes back as 400 with the reason, shown on the page.
"""

from __future__ import annotations

from typing import Protocol

from flask import Flask, jsonify, render_template, request

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


def create_app(session: LabellingSession) -> Flask:
    app = Flask(__name__)
    app.json.sort_keys = False

    @app.errorhandler(CalibrateError)
    def refused(error: CalibrateError):
        return jsonify({"error": str(error)}), 400

    @app.get("/")
    def page():
        return render_template("annotate.html", annotator=session.annotator, total=session.total, scale=SCALE,
                               flags=FLAGS)

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
