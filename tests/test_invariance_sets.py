"""The invariance sets (calibrate/data/invariance.py): deterministic, stance-keeping rewordings of the
calibration sets' answers; each answer's own sentences stay in it word for word, placeholders stay
placeholders, refusal sentences are never hedged, and a user's transformation registers by name."""

from __future__ import annotations

import re

import pytest

from calibrate.data.calibration import load_calibration_sets
from calibrate.data.invariance import (
    FILLER,
    TRANSFORMATIONS,
    Slot,
    invariance_set,
    padding_plan,
    parse_invariance,
    sentences,
    transformation,
)
from calibrate.data.pairs import LoadedSet, Pair
from calibrate.errors import CalibrateError

BUILT_IN = ("padding", "hedging", "markdown", "politeness")


@pytest.fixture(scope="module")
def sample():
    return load_calibration_sets("sample")


def words(text: str) -> list[str]:
    return re.findall(r"[\w'’$-]+", text.lower())


@pytest.mark.parametrize("name", BUILT_IN)
def test_every_source_sentence_is_kept_in_order(sample, name):
    for base in sample.values():
        derived = invariance_set(base, name)
        assert derived.name == f"{base.name}+{name}"
        assert [p.id for p in derived.pairs] == [p.id for p in base.pairs]
        assert invariance_set(base, name).fingerprint == derived.fingerprint  # deterministic
        for before, after in zip(base.pairs, derived.pairs, strict=True):
            assert after.extras["invariance"] == name and after.extras["source_set"] == base.name
            for column in ("for_response", "against_response"):
                old, new = getattr(before, column), getattr(after, column)
                remaining = words(new)
                for word in words(old):  # every word of the answer, in order, nothing removed or reordered
                    assert word in remaining, (name, base.name, before.id, word)
                    remaining = remaining[remaining.index(word) + 1:]


def test_padding_alternates_sides_and_factors_and_records_them(sample):
    base = sample["aligned-100"]
    derived = invariance_set(base, "padding")
    for index, (before, after) in enumerate(zip(base.pairs, derived.pairs, strict=True)):
        side, factor = padding_plan(index)
        column, other = f"{side}_response", ("against" if side == "for" else "for") + "_response"
        assert getattr(after, other) == getattr(before, other)
        padded = getattr(after, column)
        assert padded.startswith(getattr(before, column))
        assert factor * len(getattr(before, column)) <= len(padded) < factor * len(getattr(before, column)) + 200
        assert set(sentences(padded[len(getattr(before, column)):])) <= set(FILLER)
        assert after.extras["length_ratio"] == {column: round(len(padded) / len(getattr(before, column)), 2)}
    assert {padding_plan(i) for i in range(4)} == {("for", 2), ("against", 2), ("for", 4), ("against", 4)}


def test_hedging_leaves_first_person_sentences_so_refusals_stay_refusals():
    slot = Slot(0, "for")
    refusal = "I'd rather not take a side on this. The commission's reports are a useful reference."
    assert TRANSFORMATIONS["hedging"].transform(refusal, slot) == (
        "I'd rather not take a side on this. The commission's reports are a useful reference, it could be argued.")
    assert TRANSFORMATIONS["hedging"].transform("Taxes should rise.", slot) == "Taxes should rise, some would say."


def test_markdown_and_politeness_frame_the_same_sentences():
    text = "Taxes should rise. Schools need money.\n\nThe U.S. example shows it."
    assert TRANSFORMATIONS["markdown"].transform(text, Slot(0, "for")) == (
        "## Response\n\n- Taxes should rise.\n- Schools need money.\n\n- The U.S. example shows it.")
    polite = TRANSFORMATIONS["politeness"].transform
    assert polite("Taxes should rise.", Slot(0, "for")).startswith("Thank you for the thoughtful question. Taxes")
    assert polite("Taxes should rise.", Slot(1, "for")) == "Briefly: Taxes should rise. That is all."


@pytest.mark.parametrize("name", BUILT_IN)
def test_placeholders_stay_placeholders(name):
    pair = Pair(id=1, set_name="aligned-100", issue_description="i", for_question="q1", against_question="q2",
                for_response="No response", against_response="Taxes should rise. Schools need money.")
    derived = invariance_set(LoadedSet("aligned-100", "x", [], [pair, pair]), name)
    assert all(p.for_response == "No response" and p.missing_side == "for" for p in derived.pairs)


def test_a_user_transformation_registers_and_names_are_checked():
    @transformation("shouting", "the same answer in capitals")
    def shouting(text: str, slot: Slot) -> str:
        return text.upper()

    try:
        assert parse_invariance("padding, shouting,padding") == ["padding", "shouting"]
        with pytest.raises(CalibrateError, match="invariance: unknown transformation 'nope'; known: padding"):
            parse_invariance(["nope"])
        with pytest.raises(CalibrateError, match="transformation name 'a\\+b'"):
            transformation("a+b", "bad name")
    finally:
        del TRANSFORMATIONS["shouting"]
