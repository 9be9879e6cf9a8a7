"""Public names imported on first use (PEP 562), so that a package's face stays light to import: the
top-level API and the layers' `__init__` files name what they offer without loading pandas or aiohttp."""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import Any


def lazy_names(namespace: dict[str, Any], table: dict[str, str]) -> tuple[Callable[[str], object],
                                                                          Callable[[], list[str]]]:
    """The `__getattr__` and `__dir__` of a package whose public names (`table`: name -> the module that
    defines it) are imported on first use and then kept in its namespace (its `globals()`), so later
    lookups are plain."""

    def getattr_(name: str) -> object:
        if name not in table:
            raise AttributeError(f"module {namespace['__name__']!r} has no attribute {name!r}")
        value = getattr(import_module(table[name]), name)
        namespace[name] = value
        return value

    def dir_() -> list[str]:
        return sorted(set(namespace) | set(namespace.get("__all__", ())))

    return getattr_, dir_
