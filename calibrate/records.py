"""Typed records that write and read the JSON files calibrate produces (calibration.json,
comparison.json, metrics.json): frozen dataclasses whose fields are the file's keys.

`Record.to_dict` and `Record.from_dict` are derived from the field types, so a record class states its
shape once and the reading and writing cannot drift apart. Supported field types: `bool`, `int`,
`float`, `str`, `None`, `X | None`, `list[X]`, `tuple[X, ...]` and fixed tuples (written as JSON
lists), `dict[str, X]`, `Enum`s (by value), nested `Record`s, and `Any` (JSON kept as it is, for the
few parts that are free-form by nature, e.g. a judge's own config values).

Numbers follow `rounding.finite`: a NaN or infinite float is written as null; null read into a plain
`float` field is NaN again. A field with `metadata={"key": "json-key"}` is written under that key (for
keys that are not identifiers); `metadata={"omit_none": True}` leaves the key out when the value is
None (keys that today's files only have sometimes).
"""

from __future__ import annotations

import dataclasses
import enum
import math
import types
from functools import cache
from typing import TYPE_CHECKING, Any, ClassVar, Self, Union, get_args, get_origin, get_type_hints

from calibrate.rounding import finite


def omitted_when_none() -> Any:
    """A field defaulting to None whose key is left out of the JSON while it is None (a key a file has only
    sometimes)."""
    return dataclasses.field(default=None, metadata={"omit_none": True})


class RecordError(ValueError):
    """A JSON value that does not fit the record's shape; `path` says where (e.g. `sets.aligned-100.n_pairs`)."""

    def __init__(self, path: str, problem: str):
        super().__init__(f"{path or 'the record'}: {problem}")
        self.path = path


class Record:
    """Base of the typed records: subclasses are `@dataclass(frozen=True)` classes."""

    if TYPE_CHECKING:  # what @dataclass gives every subclass, so `dataclasses.fields` accepts records
        __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON-ready data, keys in field order."""
        out: dict[str, Any] = {}
        for spec in dataclasses.fields(self):
            value = getattr(self, spec.name)
            if value is None and spec.metadata.get("omit_none"):
                continue
            out[spec.metadata.get("key", spec.name)] = _dump(value)
        return out

    @classmethod
    def from_dict(cls, data: Any, path: str = "") -> Self:
        """The record from JSON data as `to_dict` writes it; a missing key whose field has a default takes
        the default, an unknown key is an error (a misspelt key must not pass silently)."""
        if not isinstance(data, dict):
            raise RecordError(path, f"expected an object, got {type(data).__name__}")
        record_class: type = cls  # as a plain class: mypy does not see that type[Self] is hashable
        hints = _hints(record_class)
        known: dict[str, Any] = {}
        keys = set()
        for spec in dataclasses.fields(cls):
            key = spec.metadata.get("key", spec.name)
            keys.add(key)
            where = f"{path}.{key}" if path else key
            if key in data:
                known[spec.name] = _load(hints[spec.name], data[key], where)
            elif spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
                if not _optional(hints[spec.name]):
                    raise RecordError(where, "missing")
                known[spec.name] = None
        unknown = sorted(set(data) - keys)
        if unknown:
            raise RecordError(path, f"unknown key(s) {', '.join(map(repr, unknown))}")
        return cls(**known)


@cache
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


def _optional(hint: Any) -> bool:
    return hint is Any or (_is_union(hint) and type(None) in get_args(hint))


def _is_union(hint: Any) -> bool:
    return get_origin(hint) in (Union, types.UnionType)


def _dump(value: Any) -> Any:
    if isinstance(value, Record):
        return value.to_dict()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return finite(value)
    if isinstance(value, dict):
        return {str(key): _dump(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_dump(item) for item in value]
    raise TypeError(f"a record cannot hold a {type(value).__name__}")


def _load(hint: Any, value: Any, path: str) -> Any:
    if hint is Any:
        return value
    origin, args = get_origin(hint), get_args(hint)
    if _is_union(hint):
        if value is None and type(None) in args:
            return None
        problems = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _load(option, value, path)
            except RecordError as error:
                problems.append(str(error))
        raise RecordError(path, f"fits none of {hint} ({'; '.join(problems)})")
    if isinstance(hint, type) and issubclass(hint, Record):
        return hint.from_dict(value, path)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        try:
            return hint(value)
        except ValueError:
            raise RecordError(path, f"{value!r} is not one of {[m.value for m in hint]}") from None
    if hint is float:
        if value is None:
            return math.nan
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise RecordError(path, f"expected a number, got {value!r}")
    if hint is bool or hint is int or hint is str:
        if type(value) is not hint:
            raise RecordError(path, f"expected {hint.__name__}, got {value!r}")
        return value
    if hint is type(None):
        if value is not None:
            raise RecordError(path, f"expected null, got {value!r}")
        return None
    if origin is list:
        return [_load(args[0], item, f"{path}[{i}]") for i, item in enumerate(_sequence(value, path))]
    if origin is tuple:
        items = _sequence(value, path)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_load(args[0], item, f"{path}[{i}]") for i, item in enumerate(items))
        if len(items) != len(args):
            raise RecordError(path, f"expected {len(args)} items, got {len(items)}")
        return tuple(_load(a, item, f"{path}[{i}]") for i, (a, item) in enumerate(zip(args, items, strict=True)))
    if origin is dict:
        if not isinstance(value, dict):
            raise RecordError(path, f"expected an object, got {type(value).__name__}")
        return {key: _load(args[1], item, f"{path}.{key}") for key, item in value.items()}
    raise TypeError(f"{path}: records do not support fields of type {hint}")


def _sequence(value: Any, path: str) -> list[Any]:
    if not isinstance(value, list):
        raise RecordError(path, f"expected a list, got {type(value).__name__}")
    return value

