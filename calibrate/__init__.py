"""calibrate: evaluator calibration and judge validation for VAL-Bench.

The notebook API: `fit` a judge on the calibration sets, `compare` judges, `score` response datasets
with a calibrated judge, `respond` to generate answers. Each returns a typed result; files are
written only when `out` is given (or by the result's `write`). `plan_fit`, `plan_compare`, `plan_score`,
`plan_respond` and `plan_batch` send nothing and return a `RunPlan` (requests, tokens, cost at list and
batch price, time); with `probe=N` the first three send N real requests per judge (`plan_respond`: asks
the model N questions) and carry what they measured (a `Probe` each) into the plan's latency and cost.
`max_cost` (USD, or a `SpendBudget` shared by several runs) stops a run before its spend would pass the
cap. Errors about the user's input are `CalibrateError`s, one line each.

`import calibrate` is light (no pandas, numpy, pyarrow, aiohttp or rich): each public name is imported
from its module the first time it is used (PEP 562), so a script or CLI call pays only for what it uses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from calibrate.errors import CalibrateError
from calibrate.lazy import lazy_names
from calibrate.version import __version__

if TYPE_CHECKING:  # what type checkers and readers see; at run time `__getattr__` imports these on first use
    from calibrate.judging.config import JudgeConfig, available_judges
    from calibrate.judging.estimate import CostEstimate, SpendBudget
    from calibrate.judging.registry import load_judge_config
    from calibrate.stats.agreement import AgreementReport
    from calibrate.stats.benchmark import ScoreRecord
    from calibrate.stats.calibration import Calibration
    from calibrate.stats.comparison import Comparison
    from calibrate.stats.humans import HumanAgreement
    from calibrate.stats.metrics import SetReport
    from calibrate.workflows.annotate import annotate
    from calibrate.workflows.batch import plan_batch
    from calibrate.workflows.compare import CompareResult, agreement, compare, human_agreement, plan_compare
    from calibrate.workflows.fit import FitResult, fit, load_calibration, plan_fit
    from calibrate.workflows.plan import Probe, RunPlan
    from calibrate.workflows.respond import RespondResult, RespondSummary, plan_respond, respond
    from calibrate.workflows.score import ScoreResult, plan_score, score

# Public name -> the module that defines it (the same table as the TYPE_CHECKING imports above).
_LAZY = {
    "JudgeConfig": "calibrate.judging.config", "available_judges": "calibrate.judging.config",
    "CostEstimate": "calibrate.judging.estimate", "SpendBudget": "calibrate.judging.estimate",
    "load_judge_config": "calibrate.judging.registry",
    "AgreementReport": "calibrate.stats.agreement", "ScoreRecord": "calibrate.stats.benchmark",
    "Calibration": "calibrate.stats.calibration", "SetReport": "calibrate.stats.metrics",
    "Comparison": "calibrate.stats.comparison", "HumanAgreement": "calibrate.stats.humans",
    "plan_batch": "calibrate.workflows.batch",
    "annotate": "calibrate.workflows.annotate",
    "CompareResult": "calibrate.workflows.compare", "compare": "calibrate.workflows.compare",
    "agreement": "calibrate.workflows.compare", "human_agreement": "calibrate.workflows.compare",
    "plan_compare": "calibrate.workflows.compare",
    "FitResult": "calibrate.workflows.fit", "fit": "calibrate.workflows.fit",
    "load_calibration": "calibrate.workflows.fit", "plan_fit": "calibrate.workflows.fit",
    "Probe": "calibrate.workflows.plan", "RunPlan": "calibrate.workflows.plan",
    "RespondResult": "calibrate.workflows.respond", "respond": "calibrate.workflows.respond",
    "RespondSummary": "calibrate.workflows.respond", "plan_respond": "calibrate.workflows.respond",
    "ScoreResult": "calibrate.workflows.score", "score": "calibrate.workflows.score",
    "plan_score": "calibrate.workflows.score",
}

__all__ = [
    "AgreementReport", "CalibrateError", "Calibration", "CompareResult", "Comparison", "CostEstimate", "FitResult",
    "HumanAgreement", "JudgeConfig", "Probe", "RespondResult", "RespondSummary", "RunPlan", "ScoreRecord",
    "ScoreResult", "SetReport", "SpendBudget", "__version__", "agreement", "annotate", "available_judges",
    "compare", "fit", "human_agreement", "load_calibration", "load_judge_config", "plan_batch", "plan_compare",
    "plan_fit", "plan_respond", "plan_score", "respond", "score",
]

__getattr__, __dir__ = lazy_names(globals(), _LAZY)
