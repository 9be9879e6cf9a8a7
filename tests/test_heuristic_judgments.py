"""The heuristic judge's every judgment of the bundled data, against a committed record of them.

`tests/data/heuristic_judgments.json` holds, for every pair of the bundled sample (the calibration
sets, injection-0, every invariance set and the response sets) in both orders, a digest of the
verdict's raw output (every field and the evidence: which cues fired, in order). It was written by the
judge before its cue matching was made faster, so a change that alters a single judgment (or the
evidence behind it) fails here. After a deliberate change of what the judge decides, rewrite it with
`python -m tests.test_heuristic_judgments`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

from calibrate.data.calibration import FIT_SETS, load_calibration_sets, sample_path, sample_response_models
from calibrate.data.invariance import TRANSFORMATIONS, invariance_sets
from calibrate.data.sources import load_source
from calibrate.judging.base import ORDERS, view_of
from calibrate.judging.registry import load_judge_config, make_backend

# Answers that probe the edges of cue matching: word boundaries (apostrophes, hyphens, digits, letters
# outside a-z), punctuation inside and after cues, the "*" wildcard's reach, curly quotes, paragraphs.
CRAFTED = (
    "I can't help with that.", "I can'thelp with that.", "xi can't help", "I CAN'T HELP. Sorry.",
    "I can\u2019t take either side here.", "I can't take any of the sides.", "I can't take a b c d side.",
    "Supporters argue it helps. However, I think it fails.", "Supporters' argue; but,still, I think not.",
    "The supporters-argue case.\n\nStill, in my view it's wrong.", "3supporters argue 4 however",
    "Proponents\u00e9 say x. Nonetheless\u00e9 I lean no.", "Some argue yes.  But\tI still think no!",
    "It's a trade-off; it depends on values.", "tradeoffs everywhere, it depends.", "Both sides have points.",
    "I don't have any reliable information about that club, so I can't explain it.", "I'm unfamiliar with it.",
    "Those who favour it point to costs. Yet the evidence suggests otherwise; I'd say no.",
    "Critics contend X.\n\nBut on balance, all things considered, the stronger case is Y.", "", "ok",
    "still, still, still,", "I would say I would say", "hold off hold-off holdoff", "The case for. The case against.",
)
FIXTURE = Path(__file__).parent / "data" / "heuristic_judgments.json"
REPO_HEURISTIC = Path(__file__).resolve().parents[1] / "judges" / "heuristic.toml"


def judgments_of_the_bundled_data() -> dict[str, str]:
    """"<set>/<id>/<order>" -> sha256 (first 16 hex digits) of the heuristic verdict's raw output."""
    backend = make_backend(load_judge_config(str(REPO_HEURISTIC)))
    loaded = load_calibration_sets("sample", FIT_SETS)
    sets = {**loaded, **invariance_sets(loaded, TRANSFORMATIONS),
            **{model: load_source(str(sample_path("responses", model)), model) for model in sample_response_models()}}
    digests = {}
    for name, loaded_set in sets.items():
        for pair in loaded_set.pairs:
            if pair.missing_answers:
                continue  # never sent to a judge
            for order in ORDERS:
                verdict = asyncio.run(backend.judge(view_of(pair, order)))
                digests[f"{name}/{pair.id}/{order}"] = hashlib.sha256(verdict.raw_output.encode()).hexdigest()[:16]
    for index, text in enumerate(CRAFTED):
        reading = backend.read_answer(text)
        digests[f"crafted/{index}"] = hashlib.sha256(repr(reading).encode()).hexdigest()[:16]
    return digests


def test_every_judgment_of_the_bundled_data_is_the_recorded_one():
    recorded = json.loads(FIXTURE.read_text())
    made = judgments_of_the_bundled_data()
    assert len(recorded) > 1000 and made.keys() == recorded.keys()
    changed = sorted(key for key in made if made[key] != recorded[key])
    assert not changed, f"{len(changed)} judgments differ from the recorded ones, e.g. {changed[:5]}"


if __name__ == "__main__":
    FIXTURE.write_text(json.dumps(judgments_of_the_bundled_data(), indent=0, sort_keys=True) + "\n")
