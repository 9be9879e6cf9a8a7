"""Numbers as the outputs record them: None where there is no finite value (JSON has no NaN), and
rounded where a record shows a statistic."""

from __future__ import annotations

import math
from typing import Any


def finite(value: Any) -> float | None:
    """`value` as a plain float, or None when it is missing, NaN or infinite."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def rounded(value: Any, digits: int = 4) -> float | None:
    """`value` rounded to `digits`, or None when it is missing, NaN or infinite."""
    number = finite(value)
    return None if number is None else round(number, digits)
