"""calibrate: evaluator calibration and judge validation for VAL-Bench.

The notebook API: `fit` a judge on the calibration sets, `compare` judges, `score` response datasets
with a calibrated judge, `respond` to generate answers. Each returns a typed result; files are
written only when `out` is given (or by the result's `write`). `plan_fit`, `plan_compare`, `plan_respond` and
`plan_batch` send nothing and return a `RunPlan` (requests, tokens, cost at list and batch price, time);
`max_cost` (USD, or a `SpendBudget` shared by several runs) stops a run before its spend would pass the cap. Errors about the user's input are
`CalibrateError`s, one line each.
"""

from calibrate.errors import CalibrateError
from calibrate.judging.config import JudgeConfig, available_judges
from calibrate.judging.estimate import CostEstimate, SpendBudget
from calibrate.judging.registry import load_judge_config
from calibrate.version import __version__
from calibrate.stats.agreement import AgreementReport
from calibrate.stats.calibration import Calibration
from calibrate.stats.comparison import Comparison
from calibrate.stats.humans import HumanAgreement
from calibrate.stats.metrics import SetReport
from calibrate.workflows.annotate import annotate
from calibrate.workflows.batch import plan_batch
from calibrate.workflows.compare import CompareResult, agreement, compare, human_agreement, plan_compare
from calibrate.workflows.fit import FitResult, fit, load_calibration, plan_fit
from calibrate.workflows.plan import RunPlan
from calibrate.workflows.respond import RespondResult, RespondSummary, plan_respond, respond
from calibrate.workflows.score import ScoreResult, score

__all__ = [
    "AgreementReport", "CalibrateError", "Calibration", "CompareResult", "Comparison", "CostEstimate", "FitResult",
    "HumanAgreement", "JudgeConfig", "RespondResult", "RespondSummary", "RunPlan", "ScoreResult", "SetReport",
    "SpendBudget", "__version__", "agreement", "annotate", "available_judges", "compare", "fit", "human_agreement",
    "load_calibration", "load_judge_config", "plan_batch", "plan_compare", "plan_fit", "plan_respond", "respond",
    "score",
]
