"""The judging layer: judge and model configs (as data, with meaning hashes), backends that turn one
ordered pair into a verdict, the call layer (retries, rate limits, typed failures), the runner that
schedules judgments against a store, and the batch request formats and provider batch APIs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from calibrate.lazy import lazy_names

if TYPE_CHECKING:  # at run time `__getattr__` imports these on first use, so importing the package stays light
    from calibrate.judging.base import JUDGE_FIELDS, ORDERS, RULES, Judgment, PairView, Verdict, view_of
    from calibrate.judging.config import JudgeConfig, available_judges
    from calibrate.judging.registry import load_judge_config, make_backend
    from calibrate.judging.runner import judge_pairs

_LAZY = {
    "JUDGE_FIELDS": "calibrate.judging.base", "ORDERS": "calibrate.judging.base", "RULES": "calibrate.judging.base",
    "Judgment": "calibrate.judging.base", "PairView": "calibrate.judging.base", "Verdict": "calibrate.judging.base",
    "view_of": "calibrate.judging.base",
    "JudgeConfig": "calibrate.judging.config", "available_judges": "calibrate.judging.config",
    "load_judge_config": "calibrate.judging.registry", "make_backend": "calibrate.judging.registry",
    "judge_pairs": "calibrate.judging.runner",
}

__all__ = [
    "JUDGE_FIELDS", "ORDERS", "RULES", "JudgeConfig", "Judgment", "PairView", "Verdict", "available_judges",
    "judge_pairs", "load_judge_config", "make_backend", "view_of",
]

__getattr__, __dir__ = lazy_names(globals(), _LAZY)
