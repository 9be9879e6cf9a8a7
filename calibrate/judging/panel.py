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
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

from calibrate.errors import CalibrateError
from calibrate.judging.base import JUDGE_FIELDS, Backend, Judgment, PairView, Verdict, validate_fields

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
        tokens = {"input_tokens": sum(v.input_tokens for v in verdicts),
                  "output_tokens": sum(v.output_tokens for v in verdicts), "attempts": sum(v.attempts for v in verdicts)}
        if fields is None:
            return Verdict(None, raw, "no_quorum", self._no_quorum_reason(
                [m.config.name for m, v in zip(self.members, verdicts, strict=True) if v.fields is None]), **tokens)
        return Verdict(fields, raw, **tokens)

    def _no_quorum_reason(self, failed: list[str]) -> str:
        return f"{len(failed)} of {len(self.members)} members failed ({', '.join(failed)}); quorum is {self.quorum}"

    def combine_tables(self, tables: list[pd.DataFrame]) -> list[Judgment]:
        """Panel judgments from the members' judgment tables (rows aligned: same pairs, orders, repeats)."""
        import pandas as pd  # here, not at the top: importing calibrate stays light

        config = self.config
        judgments = []
        names = [member.config.name for member in self.members]
        for rows in zip(*(table.itertuples(index=False) for table in tables), strict=True):
            votes = {name: ({key: getattr(row, key) for key in JUDGE_FIELDS} if row.parse_status == "ok" else None)
                     for name, row in zip(names, rows, strict=True)}
            fields, raw = combine(votes, self.quorum)
            first = rows[0]
            failed = [name for name, vote in votes.items() if vote is None]
            latencies = [row.latency_s for row in rows if row.latency_s is not None and not pd.isna(row.latency_s)]
            judgments.append(Judgment(
                judge_name=config.name, config_hash=config.config_hash, item_key=first.item_key, order=first.order,
                parse_status="ok" if fields is not None else "no_quorum",
                failure_reason=None if fields is not None else self._no_quorum_reason(failed),
                raw_output=raw, latency_s=max(latencies) if latencies else None,
                input_tokens=int(sum(row.input_tokens for row in rows)),
                output_tokens=int(sum(row.output_tokens for row in rows)),
                attempts=int(sum(row.attempts for row in rows)), truncated_chars=int(max(r.truncated_chars for r in rows)),
                repeat=int(first.repeat), fields=fields or {},
            ))
        return judgments

    async def aclose(self) -> None:
        for member in self.members:
            await member.aclose()
