"""Numbers as the outputs record them: None where there is no finite value (JSON has no NaN). Records
keep full precision; reports round when they show a number."""

from __future__ import annotations

import math
from typing import Any


def finite(value: Any) -> float | None:
    """`value` as a plain float, or None when it is missing, NaN or infinite."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None
