"""calibrate: evaluator calibration and judge validation for VAL-Bench."""

__version__ = "0.1.0"
