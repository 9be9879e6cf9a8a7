"""The typed-record base: what `to_dict` writes, `from_dict` reads back, field by field, and a value that
does not fit the declared shape is an error naming where it is."""

from __future__ import annotations

import enum
import json
import math
from dataclasses import dataclass, field
from typing import Any

import pytest

from calibrate.records import Record, RecordError


class Basis(enum.Enum):
    HUMAN = "human labels"
    SETS = "calibration sets"


@dataclass(frozen=True)
class Estimate(Record):
    value: float
    ci: tuple[float, float]


@dataclass(frozen=True)
class Row(Record):
    name: str
    n: int
    ok: bool
    basis: Basis
    estimates: dict[str, Estimate]
    history: list[int]
    tags: tuple[str, ...] = ()
    note: str | None = None
    hidden: str | None = field(default=None, metadata={"omit_none": True})
    one_refusal: int = field(default=0, metadata={"key": "one-refusal-50"})
    extra: Any = None


def example() -> Row:
    return Row("judge", 3, True, Basis.HUMAN, {"PAC": Estimate(52.5, (40.0, 61.25))}, [1, 2], ("a", "b"),
               note="x", one_refusal=7, extra={"free": [1, "two"]})


def test_to_dict_writes_the_json_keys_and_values():
    written = example().to_dict()
    assert written == {
        "name": "judge", "n": 3, "ok": True, "basis": "human labels",
        "estimates": {"PAC": {"value": 52.5, "ci": [40.0, 61.25]}}, "history": [1, 2], "tags": ["a", "b"],
        "note": "x", "one-refusal-50": 7, "extra": {"free": [1, "two"]},
    }
    assert "hidden" not in written  # omitted while None


def test_round_trip_through_json_gives_an_equal_record():
    record = example()
    assert Row.from_dict(json.loads(json.dumps(record.to_dict()))) == record
    assert Row.from_dict(example().to_dict() | {"hidden": "h"}).hidden == "h"


def test_nan_is_written_as_null_and_read_back_as_nan():
    written = Estimate(math.nan, (math.inf, 1.0)).to_dict()
    assert written == {"value": None, "ci": [None, 1.0]}
    read = Estimate.from_dict(written)
    assert math.isnan(read.value) and math.isnan(read.ci[0]) and read.ci[1] == 1.0


def test_defaults_fill_missing_keys_and_required_keys_are_required():
    minimal = {"name": "j", "n": 0, "ok": False, "basis": "calibration sets", "estimates": {}, "history": []}
    read = Row.from_dict(minimal)
    assert (read.tags, read.note, read.one_refusal, read.basis) == ((), None, 0, Basis.SETS)
    with pytest.raises(RecordError, match=r"^n: missing$"):
        Row.from_dict({k: v for k, v in minimal.items() if k != "n"})


@pytest.mark.parametrize(("change", "where"), [
    ({"n": "3"}, r"^n: expected int"),
    ({"ok": 1}, r"^ok: expected bool"),
    ({"basis": "vibes"}, r"^basis: 'vibes' is not one of"),
    ({"estimates": {"PAC": {"value": 1.0, "ci": [1.0]}}}, r"^estimates\.PAC\.ci: expected 2 items"),
    ({"estimates": {"PAC": {"value": "high", "ci": [1.0, 2.0]}}}, r"^estimates\.PAC\.value: expected a number"),
    ({"history": [1, 2.5]}, r"^history\[1\]: expected int"),
    ({"surprise": 1}, r"unknown key\(s\) 'surprise'"),
])
def test_a_value_off_the_shape_is_an_error_naming_its_place(change, where):
    with pytest.raises(RecordError, match=where):
        Row.from_dict(example().to_dict() | change)


def test_only_json_values_can_be_written():
    @dataclass(frozen=True)
    class Holder(Record):
        thing: Any

    with pytest.raises(TypeError, match="set"):
        Holder({1, 2}).to_dict()
