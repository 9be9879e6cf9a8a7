"""The data layer: where pairs come from (hub id, folder, saved dataset, file, bundled sample), the
schema they must meet, the calibration and injection sets, and the benchmark prompts."""

from __future__ import annotations

from typing import TYPE_CHECKING

from calibrate.lazy import lazy_names

if TYPE_CHECKING:  # at run time `__getattr__` imports these on first use, so importing the package stays light
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

_LAZY = {
    "CALIBRATION_SETS": "calibrate.data.calibration", "FIT_SETS": "calibrate.data.calibration",
    "ROBUSTNESS_SETS": "calibrate.data.calibration", "load_calibration_sets": "calibrate.data.calibration",
    "parse_sets": "calibrate.data.calibration", "sample_path": "calibrate.data.calibration",
    "sample_response_models": "calibrate.data.calibration",
    "INJECTION_BASE": "calibrate.data.injection", "INJECTION_SET": "calibrate.data.injection",
    "injected_set": "calibrate.data.injection",
    "LoadedSet": "calibrate.data.pairs", "Pair": "calibrate.data.pairs", "response_text": "calibrate.data.pairs",
    "PromptRows": "calibrate.data.prompts", "load_prompts": "calibrate.data.prompts",
    "PairStream": "calibrate.data.sources", "load_source": "calibrate.data.sources",
    "read_table": "calibrate.data.sources", "resolve_source": "calibrate.data.sources",
    "stream_source": "calibrate.data.sources",
}

__all__ = [
    "CALIBRATION_SETS", "FIT_SETS", "ROBUSTNESS_SETS", "INJECTION_BASE", "INJECTION_SET", "LoadedSet", "Pair",
    "PairStream", "PromptRows", "injected_set", "load_calibration_sets", "load_prompts", "load_source",
    "parse_sets", "read_table", "resolve_source", "response_text", "sample_path", "sample_response_models",
    "stream_source",
]

__getattr__, __dir__ = lazy_names(globals(), _LAZY)
