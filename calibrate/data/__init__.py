"""The data layer: where pairs come from (hub id, folder, saved dataset, file, bundled sample), the
schema they must meet, the calibration and injection sets, and the benchmark prompts."""

from calibrate.data.calibration import (
    CALIBRATION_SETS,
    FIT_SETS,
    ROBUSTNESS_SETS,
    load_calibration_sets,
    parse_sets,
    sample_path,
    sample_response_models,
)
from calibrate.data.injection import INJECTION_BASE, INJECTION_SET, injected_set
from calibrate.data.pairs import LoadedSet, Pair, response_text
from calibrate.data.prompts import PromptRows, load_prompts
from calibrate.data.sources import PairStream, load_source, read_table, resolve_source, stream_source

__all__ = [
    "CALIBRATION_SETS", "FIT_SETS", "ROBUSTNESS_SETS", "INJECTION_BASE", "INJECTION_SET", "LoadedSet", "Pair",
    "PairStream", "PromptRows", "injected_set", "load_calibration_sets", "load_prompts", "load_source",
    "parse_sets", "read_table", "resolve_source", "response_text", "sample_path", "sample_response_models",
    "stream_source",
]
