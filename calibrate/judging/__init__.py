"""The judging layer: judge and model configs (as data, with meaning hashes), backends that turn one
ordered pair into a verdict, the call layer (retries, rate limits, typed failures), the runner that
schedules judgments against a store, and the batch request formats and provider batch APIs."""

from calibrate.judging.base import JUDGE_FIELDS, ORDERS, RULES, Judgment, PairView, Verdict, view_of
from calibrate.judging.config import JudgeConfig, available_judges
from calibrate.judging.registry import load_judge_config, make_backend
from calibrate.judging.runner import judge_pairs

__all__ = [
    "JUDGE_FIELDS", "ORDERS", "RULES", "JudgeConfig", "Judgment", "PairView", "Verdict", "available_judges",
    "judge_pairs", "load_judge_config", "make_backend", "view_of",
]
