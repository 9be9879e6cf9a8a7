"""Backend `panel`: several judges voting as one, a candidate like any other.

Each member judges through the runner with its own config and cache entries, so a member's
judgments are shared with every other run that uses that member and are paid for once. The panel's
judgment of an item is then computed from its members' judgments of the same item, order and repeat:
the median score (a half rounded toward 0, i.e. toward "mixed") and each flag by strict majority. A
panel judgment needs a quorum of members that judged successfully (by default a majority);
otherwise it is a typed failure (`no_quorum`) naming the members that failed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from calibrate.errors import CalibrateError
from calibrate.judging.base import (
    JUDGE_FIELDS,
    MISSING_ANSWER,
    V3_FIELDS,
    Backend,
    FailureKind,
    Judgment,
    PairView,
    Spend,
    Verdict,
    validate_fields,
)

if TYPE_CHECKING:
    import pandas as pd

FLAGS = ("person_1_refusal", "person_2_refusal", "person_1_has_no_information", "person_2_has_no_information")


def median_score(scores: Sequence[int]) -> int:
    """Median of integer scores; with an even count, a half-way median goes toward 0."""
    import numpy as np  # here, not at the top: importing calibrate stays light

    middle = float(np.median(scores))
    return int(math.copysign(math.floor(abs(middle)), middle))


def combine(members: dict[str, dict[str, Any] | None], quorum: int) -> tuple[dict[str, Any] | None, str]:
    """The panel's fields from its members' fields (None for a member that failed), and a raw record."""
    ok = {name: fields for name, fields in members.items() if fields is not None}
    raw = json.dumps({name: None if fields is None else {key: fields[key] for key in ("alignment_score", *FLAGS)}
                      for name, fields in members.items()})
    if len(ok) < quorum:
        return None, raw
    votes = list(ok.values())
    fields: dict[str, Any] = {
        "alignment_score": median_score([v["alignment_score"] for v in votes]),
        **{flag: sum(bool(v[flag]) for v in votes) * 2 > len(votes) for flag in FLAGS},
    }
    for person in ("person_1", "person_2"):
        fields[f"{person}_core_position"] = " | ".join(f"{n}: {v[f'{person}_core_position']}" for n, v in ok.items())
    for key in ("key_points_of_alignment", "key_points_of_opposition"):
        fields[key] = list(dict.fromkeys(point for v in votes for point in v[key]))
    return validate_fields(fields), raw


class PanelBackend(Backend):
    CONFIG_KEYS: ClassVar[dict[str, tuple[Any, bool]]] = {
        "members": (None, False),  # their config hashes are in the meaning instead (registry.py)
        "quorum": (None, True),  # None: a majority of the members
    }

    @classmethod
    def validate_settings(cls, settings: dict[str, Any], path: Path, where: str) -> None:
        members = settings["members"]
        if not isinstance(members, list) or len(members) < 2 or not all(isinstance(m, str) and m for m in members):
            raise CalibrateError(f"{where}: 'members' must list at least two judges (names or .toml paths)")
        if len(set(members)) != len(members):
            raise CalibrateError(f"{where}: 'members' names a judge twice")
        quorum = settings["quorum"]
        if quorum is not None and (isinstance(quorum, bool) or not isinstance(quorum, int)
                                   or not 1 <= quorum <= len(members)):
            raise CalibrateError(f"{where}: 'quorum' must be an integer from 1 to the number of members")

    @classmethod
    def member_names(cls, settings: dict[str, Any]) -> list[str]:
        return list(settings["members"])

    def __init__(self, config, members: Sequence[Backend]) -> None:
        """`members`: the members' backends, built by the registry from `member_names`."""
        super().__init__(config)
        self.members = list(members)
        self.quorum = config.settings["quorum"] or len(self.members) // 2 + 1

    def preflight(self) -> None:
        for member in self.members:
            member.preflight()

    async def judge(self, view: PairView) -> Verdict:
        """Ask every member directly (uncached); the runner instead judges members through the cache."""
        verdicts = await asyncio.gather(*(member.judge(view) for member in self.members))
        fields, raw = combine({m.config.name: v.fields for m, v in zip(self.members, verdicts, strict=True)},
                              self.quorum)
        tokens: Spend = {"input_tokens": sum(v.input_tokens for v in verdicts),
                         "output_tokens": sum(v.output_tokens for v in verdicts),
                         "attempts": sum(v.attempts for v in verdicts)}
        if fields is None:
            return Verdict(None, raw, "no_quorum", self._no_quorum_reason(
                [m.config.name for m, v in zip(self.members, verdicts, strict=True) if v.fields is None]), **tokens)
        return Verdict(fields, raw, **tokens)

    def _no_quorum_reason(self, failed: list[str]) -> str:
        return f"{len(failed)} of {len(self.members)} members failed ({', '.join(failed)}); quorum is {self.quorum}"

    def combine_tables(self, tables: list[pd.DataFrame]) -> pd.DataFrame:
        """The panel's judgment columns from the members' judgment tables (rows aligned: same pairs,
        orders, repeats), a column at a time: the median score and majority flags over the members that
        judged, texts and key points joined. A row whose pair has no answer is the panel's own
        `missing_answer` (no member was asked), not a lack of quorum."""
        import numpy as np  # here, not at the top: importing calibrate stays light
        import pandas as pd

        names = [member.config.name for member in self.members]
        first = tables[0]
        ok = np.column_stack([table["parse_status"].to_numpy() == "ok" for table in tables])
        voters = ok.sum(axis=1)
        quorate = voters >= self.quorum
        missing = first["parse_status"].to_numpy() == MISSING_ANSWER
        scores = np.column_stack([table["alignment_score"].to_numpy(dtype=float, na_value=np.nan)
                                  for table in tables])
        with warnings.catch_warnings():  # a row no member judged has no median: it is not quorate either
            warnings.simplefilter("ignore", RuntimeWarning)
            middle = np.nanmedian(np.where(ok, scores, np.nan), axis=1)
            latency = np.nanmax(np.column_stack([table["latency_s"].to_numpy(dtype=float, na_value=np.nan)
                                                 for table in tables]), axis=1)
        score = np.copysign(np.floor(np.abs(middle)), middle)  # a half-way median goes toward 0
        votes = {flag: np.column_stack([(table[flag] == True).to_numpy(dtype=bool) for table in tables])  # noqa: E712
                 for flag in FLAGS}
        flags = {flag: (vote & ok).sum(axis=1) * 2 > voters for flag, vote in votes.items()}
        values = {key: list(zip(*(table[key].tolist() for table in tables), strict=True))
                  for key in ("person_1_core_position", "person_2_core_position", "key_points_of_alignment",
                              "key_points_of_opposition")}
        good = ok.tolist()
        raw = self._raw_records(names, tables, good)
        judged = quorate & ~missing
        columns: dict[str, list[Any] | None] = {  # None: a column of None (filled below or broadcast)
            **{f.name: [f.default if f.default_factory is dataclasses.MISSING else f.default_factory()] * len(first)
               for f in dataclasses.fields(Judgment) if f.name != "fields"},
            "judge_name": [self.config.name] * len(first), "config_hash": [self.config.config_hash] * len(first),
            **{column: first[column].tolist() for column in ("item_key", "order", "repeat")},
            "parse_status": np.where(missing, MISSING_ANSWER, np.where(quorate, "ok", "no_quorum")).tolist(),
            "failure_kind": [FailureKind.MISSING_ANSWER.value if lacking else None if enough else
                             FailureKind.NO_QUORUM.value for lacking, enough in zip(missing, quorate, strict=True)],
            "failure_reason": [reason if lacking else None if enough else self._no_quorum_reason(
                                   [name for name, voted in zip(names, oks, strict=True) if not voted])
                               for reason, lacking, enough, oks in zip(first["failure_reason"].tolist(), missing,
                                                                       quorate, good, strict=True)],
            "raw_output": ["" if lacking else text for text, lacking in zip(raw, missing, strict=True)],
            "latency_s": [None if math.isnan(value) else value for value in latency.tolist()],
            **{column: np.sum([table[column].to_numpy() for table in tables], axis=0).tolist()
               for column in ("input_tokens", "output_tokens", "attempts")},
            "truncated_chars": np.max([table["truncated_chars"].to_numpy() for table in tables], axis=0).tolist(),
            **{key: None for key in (*JUDGE_FIELDS, *V3_FIELDS)},
        }
        columns["created_at"] = [time.time()] * len(first)
        columns["alignment_score"] = [int(value) if use else None
                                      for value, use in zip(score.tolist(), judged, strict=True)]
        columns.update({flag: [bool(value) if use else None for value, use in zip(flags[flag].tolist(), judged,
                                                                                   strict=True)] for flag in FLAGS})
        rows = list(zip(good, judged, strict=True))
        for person in ("person_1", "person_2"):
            key = f"{person}_core_position"
            columns[key] = [" | ".join(f"{name}: {text}" for name, text, voted in zip(names, texts, oks, strict=True)
                                       if voted) if use else None
                            for texts, (oks, use) in zip(values[key], rows, strict=True)]
        for key in ("key_points_of_alignment", "key_points_of_opposition"):
            columns[key] = [list(dict.fromkeys(point for points, voted in zip(lists, oks, strict=True) if voted
                                               for point in points)) if use else None
                            for lists, (oks, use) in zip(values[key], rows, strict=True)]
        return pd.DataFrame({key: value if isinstance(value, list) else [value] * len(first)
                             for key, value in columns.items()})

    @staticmethod
    def _raw_records(names: list[str], tables: list[pd.DataFrame], good: list[list[bool]]) -> list[str]:
        """Each row's raw record: every member's score and flags as its table holds them (JSON, as
        `json.dumps` writes it), null for a member that failed. A member's few distinct votes are
        written once each, not once per row."""
        keys = ("alignment_score", *FLAGS)
        written: list[list[str]] = []
        for table in tables:
            votes = list(zip(*(table[key].tolist() for key in keys), strict=True))
            seen: dict[tuple, str] = {}  # one member's column has one type, so 1 and 1.0 never meet here
            written.append([seen.get(vote) or seen.setdefault(vote, json.dumps(dict(zip(keys, vote, strict=True))))
                            for vote in votes])
        quoted = [json.dumps(name) for name in names]
        return ["{" + ", ".join(f"{name}: {texts[row] if oks[m] else 'null'}"
                                for m, (name, texts) in enumerate(zip(quoted, written, strict=True))) + "}"
                for row, oks in enumerate(good)]

    async def aclose(self) -> None:
        for member in self.members:
            await member.aclose()
