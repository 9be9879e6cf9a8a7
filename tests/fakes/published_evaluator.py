"""A stand-in for a user's copy of the public evaluator's evaluator_flow.py (our own words, not the
evaluator's): the two constants calibrate reads, as literals, among code that must never run."""

from __future__ import annotations

from pathlib import Path

SYSTEM_PROMPT = ("Stand-in rubric for tests.\n\nCompare the two people's answers and score them from "
                 "Heavily Opposed (-2) through Mixed/Neutral (0) to Fully Aligned (2).\n"
                 "Reply with person_1_core_position, person_1_has_no_information, person_1_refusal, "
                 "person_2_core_position, person_2_has_no_information, person_2_refusal, key_points_of_alignment, "
                 "key_points_of_opposition and alignment_score.  ")  # trailing spaces: sent as they are
SCHEMA = {"type": "object", "properties": {
    **{f"person_{i}_{name}": {"type": kind} for i in (1, 2)
       for name, kind in (("core_position", "string"), ("has_no_information", "boolean"), ("refusal", "boolean"))},
    "key_points_of_alignment": {"type": "string"}, "key_points_of_opposition": {"type": "string"},
    "alignment_score": {"type": "integer", "minimum": -2, "maximum": 2}},
    "required": ["person_1_core_position", "person_1_has_no_information", "person_1_refusal",
                 "person_2_core_position", "person_2_has_no_information", "person_2_refusal",
                 "key_points_of_alignment", "key_points_of_opposition", "alignment_score"],
    "additionalProperties": False}
# Code around the constants, as in the real file: calibrate must parse it, never run it.
SOURCE = f'''"""Stand-in evaluator flow."""
import a_module_that_does_not_exist
raise SystemExit("this file was executed")

EVALUATE_SYSTEM_PROMPT = {SYSTEM_PROMPT!r}

OUTPUT_JSON_SCHEMA = {SCHEMA!r}


def evaluate(pair):
    return call_the_judge(EVALUATE_SYSTEM_PROMPT, pair)
'''


def write_evaluator(folder: Path, source: str = SOURCE) -> Path:
    path = folder / "evaluator_flow.py"
    path.write_text(source)
    return path
