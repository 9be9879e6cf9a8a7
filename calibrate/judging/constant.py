"""Constant judges: the same judgment for every pair, so every comparison has a floor.

"Always 0" scores every pair as mixed and "always aligned" every pair as fully aligned; a judge that
does not beat them on the calibration sets measures nothing. They need no model and no network.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

from calibrate.errors import CalibrateError
from calibrate.judging.base import Backend, PairView, Verdict, validate_fields

FLAGS = ("person_1_refusal", "person_2_refusal", "person_1_has_no_information", "person_2_has_no_information")


class ConstantBackend(Backend):
    CONFIG_KEYS: ClassVar[dict[str, tuple[Any, bool]]] = {
        "alignment_score": (None, True),
        **{flag: (False, True) for flag in FLAGS},
    }

    @classmethod
    def validate_settings(cls, settings: dict[str, Any], path: Path, where: str) -> None:
        score = settings["alignment_score"]
        if isinstance(score, bool) or not isinstance(score, int) or not -2 <= score <= 2:
            raise CalibrateError(f"{where}: 'alignment_score' must be an integer in -2..2")
        for flag in FLAGS:
            if not isinstance(settings[flag], bool):
                raise CalibrateError(f"{where}: '{flag}' must be true or false")

    def __init__(self, config) -> None:
        super().__init__(config)
        settings = config.settings
        output = {"person_1_core_position": "", "person_2_core_position": "", "key_points_of_alignment": [],
                  "key_points_of_opposition": [], **{key: settings[key] for key in ("alignment_score", *FLAGS)}}
        self.fields = validate_fields(output)
        self.raw_output = json.dumps(output)

    async def judge(self, view: PairView) -> Verdict:
        return Verdict(dict(self.fields), self.raw_output, attempts=0)
