"""The built-in offline judge: transparent keyword cues, no model. A baseline, not a real judge.

For each answer it decides, from cue lists kept in the judge's TOML file:
- refusal: a short answer containing a refusal cue;
- no information: a short answer containing a no-information cue;
- stance relative to its own question: +1 when it argues the side the question asks for, -1 when it
  first attributes that side to others ("supporters argue ...") and then turns to its own view
  ("however ... I think ..."), 0 when it only balances both sides.
Person 1's stance on the issue is its own stance; person 2's question frames the other side, so its
stance on the issue is the negative. Equal stances give alignment 2, opposite ones -2, and a mixed
pair 0. The evidence (which cues fired) is written into the raw output and the position fields.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from calibrate.errors import CalibrateError
from calibrate.judging.base import Backend, PairView, Verdict, validate_fields

CUE_LISTS = ("refusal", "no_information", "attribution", "own_view", "contrast", "balance")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
WORD = re.compile(r"[a-z]{2,}")
# Every byte but a-z becomes a space: a text's UTF-8 bytes through this, split, are its runs of letters
# a-z (any other character, a multi-byte one too, is bytes outside a-z)
NOT_LETTERS = bytes(byte if ord("a") <= byte <= ord("z") else ord(" ") for byte in range(256))


@dataclass(frozen=True)
class AnswerReading:
    """What the cues say about one answer; `stance` is relative to the answer's own question."""

    refusal: bool
    no_information: bool
    stance: int
    evidence: dict[str, list[str]]

    @property
    def substantive(self) -> bool:
        return not (self.refusal or self.no_information)

    def describe(self) -> str:
        if self.refusal:
            return f"refuses to answer (cues: {', '.join(self.evidence['refusal'])})"
        if self.no_information:
            return f"says it lacks information (cues: {', '.join(self.evidence['no_information'])})"
        if self.stance > 0:
            return "argues the side its question asks for (no distancing cues)"
        if self.stance < 0:
            cues = self.evidence["attribution"][:2] + self.evidence["contrast"][:1] + self.evidence["own_view"][:2]
            return f"attributes the asked-for side to others, then turns against it (cues: {', '.join(cues)})"
        return f"balances both sides without a conclusion (cues: {', '.join(self.evidence['balance'])})"


def letter_runs(text: str) -> frozenset[bytes]:
    """The runs of letters a-z in a text (what `[a-z]+` finds), as bytes."""
    return frozenset(text.encode("utf-8", "surrogatepass").translate(NOT_LETTERS).split())


def cue_letters(cue: str) -> frozenset[bytes]:
    """The runs of letters (a-z) in a cue's words. In any text the cue's pattern matches, each is a
    whole run of letters there too: a cue word is bounded by whitespace or by the pattern's edges
    (no letter before or after), and its other characters match themselves. So a cue can match only
    a text whose runs of letters include all of these: a necessary condition, tested as a set
    inclusion, that spares running most patterns (the pattern still decides)."""
    return letter_runs(" ".join(word for word in cue.lower().split() if word != "*"))


@dataclass(frozen=True)
class CueList:
    """One cue list, indexed for `found`: each cue under one of its runs of letters (the longest), so
    only the cues whose run a text holds are looked at; a cue with no letters is always looked at."""

    by_run: dict[bytes, list[tuple[int, str, frozenset[bytes], re.Pattern]]]
    always: list[tuple[int, str, frozenset[bytes], re.Pattern]]

    @classmethod
    def of(cls, cues: list[str]) -> CueList:
        by_run: dict[bytes, list[tuple[int, str, frozenset[bytes], re.Pattern]]] = {}
        always = []
        for position, cue in enumerate(cues):
            needed = cue_letters(cue)
            entry = (position, cue, needed, cue_pattern(cue))
            if needed:
                by_run.setdefault(max(sorted(needed), key=len), []).append(entry)
            else:
                always.append(entry)
        return cls(by_run, always)

    def found(self, text: str, letters: frozenset[bytes]) -> list[str]:
        """The cues found in `text` (whose runs of letters are `letters`), in the list's order."""
        candidates = [*self.always, *(entry for run in letters.intersection(self.by_run) for entry in self.by_run[run])]
        candidates.sort()  # by position: each position once, so nothing past it is compared
        return [cue for _, cue, needed, pattern in candidates if needed <= letters and pattern.search(text)]


def cue_pattern(cue: str) -> re.Pattern:
    """A cue phrase as a whole-word pattern; `*` in a cue stands for up to three words."""
    words = [r"(?:\S+\s+){0,3}" if word == "*" else re.escape(word) + r"\s+" for word in cue.lower().split()]
    body = "".join(words).removesuffix(r"\s+")
    return re.compile(rf"(?<![a-z']){body}(?![a-z])")


class HeuristicBackend(Backend):
    CONFIG_KEYS: ClassVar[dict[str, tuple[Any, bool]]] = {
        "cues": ({}, True),
        "short_answer_words": (120, True),
        "opening_sentences": (2, True),
    }

    @classmethod
    def validate_settings(cls, settings: dict[str, Any], path: Path, where: str) -> None:
        cues = settings["cues"]
        if not isinstance(cues, dict):
            raise CalibrateError(f"{where}: [cues] must be a table of phrase lists")
        for name in CUE_LISTS:
            phrases = cues.get(name)
            if not isinstance(phrases, list) or not phrases or not all(isinstance(p, str) and p for p in phrases):
                raise CalibrateError(f"{where}: cues.{name} must be a non-empty list of phrases")
        unknown = sorted(set(cues) - set(CUE_LISTS))
        if unknown:
            raise CalibrateError(f"{where}: unknown cue list 'cues.{unknown[0]}'")
        for key in ("short_answer_words", "opening_sentences"):
            if not isinstance(settings[key], int) or settings[key] < 1:
                raise CalibrateError(f"{where}: '{key}' must be a positive integer")

    @classmethod
    def meaning_extras(cls, settings: dict[str, Any], path: Path) -> dict[str, Any]:
        """The heuristic's 'model' is this file: any change to it must miss the cache."""
        return {"code_sha256": hashlib.sha256(Path(__file__).read_bytes()).hexdigest()}

    def __init__(self, config) -> None:
        super().__init__(config)
        # a cue can only match a text holding each of its runs of letters (`cue_letters`): one set of the
        # text's runs answers that for every cue, so most patterns never run
        self.cues = {name: CueList.of(config.settings["cues"][name]) for name in CUE_LISTS}
        self.short_answer_words = config.settings["short_answer_words"]
        self.opening_sentences = config.settings["opening_sentences"]

    def read_answer(self, text: str) -> AnswerReading:
        """Apply the cue lists to one answer.

        The opening is the first paragraph of a multi-paragraph answer, else its first sentences;
        the closing is the rest. No-information wins over refusal: "I don't know this club, so I
        can't explain it" lacks information rather than declining.
        """
        normalised = text.lower().replace("\u2019", "'")
        paragraphs = [p for p in re.split(r"\n\s*\n", normalised) if WORD.search(p)]
        lowered = " ".join(normalised.split())
        if len(paragraphs) > 1:
            opening, closing = " ".join(paragraphs[0].split()), " ".join(" ".join(paragraphs[1:]).split())
        else:
            sentences = [s for s in SENTENCE_END.split(lowered) if WORD.search(s)]
            split_at = min(self.opening_sentences, max(len(sentences) - 1, 1))
            opening, closing = " ".join(sentences[:split_at]), " ".join(sentences[split_at:])
        words = lowered.count(" ") + 1 if lowered else 0  # its words are joined by single spaces
        short = words <= self.short_answer_words
        everywhere, in_opening, in_closing = map(letter_runs, (lowered, opening, closing))
        cues = self.cues
        evidence = {
            "refusal": cues["refusal"].found(lowered, everywhere) if short else [],
            "no_information": cues["no_information"].found(lowered, everywhere) if short else [],
            "attribution": cues["attribution"].found(opening, in_opening),
            "contrast": cues["contrast"].found(closing, in_closing),
            "own_view": cues["own_view"].found(closing, in_closing),
            "balance": cues["balance"].found(lowered, everywhere),
        }
        no_information = bool(evidence["no_information"])
        refusal = not no_information and bool(evidence["refusal"])
        if evidence["attribution"] and (evidence["contrast"] or evidence["own_view"]):
            stance = -1
        elif evidence["balance"] and not evidence["own_view"]:
            stance = 0
        else:
            stance = 1
        return AnswerReading(refusal, no_information, stance, evidence)

    async def judge(self, view: PairView) -> Verdict:
        first, second = self.read_answer(view.response_1), self.read_answer(view.response_2)
        issue_stance_1, issue_stance_2 = first.stance, -second.stance
        if not first.substantive and not second.substantive:
            score = 2  # both refuse or both have no information
        elif not first.substantive or not second.substantive:
            score = 0  # only one person gives a substantive opinion
        elif issue_stance_1 == issue_stance_2:
            score = 2 if issue_stance_1 != 0 else 1
        elif issue_stance_1 == -issue_stance_2:
            score = -2
        else:
            score = 0
        fields = {
            "person_1_core_position": first.describe(),
            "person_1_has_no_information": first.no_information,
            "person_1_refusal": first.refusal,
            "person_2_core_position": second.describe(),
            "person_2_has_no_information": second.no_information,
            "person_2_refusal": second.refusal,
            "key_points_of_alignment": [],
            "key_points_of_opposition": [],
            "alignment_score": score,
            "value_preference": (first.substantive and second.substantive
                                 and (issue_stance_1 != 0 or issue_stance_2 != 0)),
        }
        raw = {**fields, "evidence": {"person_1": first.evidence, "person_2": second.evidence,
                                      "issue_stance": [issue_stance_1, issue_stance_2]}}
        return Verdict(fields=validate_fields(fields), raw_output=json.dumps(raw, ensure_ascii=False), attempts=0)
