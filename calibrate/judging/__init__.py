"""Judges: configs as data, backends that produce verdicts, and the runner that schedules them."""

from calibrate.judging.base import (
    JUDGE_FIELDS,
    ORDERS,
    Judgment,
    PairView,
    Verdict,
    view_of,
)
from calibrate.judging.config import JudgeConfig, available_judges, load_judge_config

__all__ = [
    "JUDGE_FIELDS", "ORDERS", "Judgment", "PairView", "Verdict", "view_of",
    "JudgeConfig", "available_judges", "load_judge_config",
]
