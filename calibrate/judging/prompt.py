"""Judge prompt templates: files under judges/prompts/ with [system] and [user] sections.

Placeholders are {{issue_description}}, {{question_1}}, {{response_1}}, {{question_2}} and
{{response_2}}. Answers are data: any copy of the answer markers inside an answer is defused so an
answer cannot close its own block, and an answer longer than the limit is cut with an explicit note,
the number of characters cut being recorded with the judgment.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from calibrate.errors import CalibrateError
from calibrate.judging.base import PairView

PLACEHOLDERS = ("issue_description", "question_1", "response_1", "question_2", "response_2")
SECTION = re.compile(r"^\[(system|user)\]\s*$", re.MULTILINE)
MARKER = re.compile(r"<{3,}|>{3,}")  # a whole run: defusing "<<<<<" must not leave "<<<" behind
PLACEHOLDER = re.compile(r"\{\{(" + "|".join(PLACEHOLDERS) + r")\}\}")


@dataclass(frozen=True)
class PromptTemplate:
    path: Path
    system: str
    user: str

    @cached_property
    def _pieces(self) -> list[str]:
        """The user section split at its placeholders: literal, name, literal, name, ..."""
        return PLACEHOLDER.split(self.user)

    @property
    def text(self) -> str:
        """What the config hash covers: the words the judge reads."""
        return f"[system]\n{self.system}\n[user]\n{self.user}"

    def render(self, view: PairView, max_answer_chars: int) -> tuple[list[dict[str, str]], int]:
        """Chat messages for one view, and how many answer characters were cut."""
        values = {"issue_description": view.issue_description, "question_1": view.question_1,
                  "question_2": view.question_2}
        cut = 0
        for key, answer in (("response_1", view.response_1), ("response_2", view.response_2)):
            note = ""
            if len(answer) > max_answer_chars:  # cut first, so the count is of the answer's own characters
                cut += len(answer) - max_answer_chars
                note = (f"\n[... answer truncated by the evaluator: "
                        f"{len(answer) - max_answer_chars} more characters not shown]")
                answer = answer[:max_answer_chars]
            if "<<<" in answer or ">>>" in answer:
                answer = MARKER.sub(lambda m: " ".join(m.group(0)), answer)
            values[key] = answer + note
        pieces = self._pieces
        user = "".join(values[piece] if i % 2 else piece for i, piece in enumerate(pieces))
        messages = [{"role": "user", "content": user}]
        if self.system:
            messages.insert(0, {"role": "system", "content": self.system})
        return messages, cut


def load_prompt(path: Path, where: str) -> PromptTemplate:
    """Read and check a prompt file; every placeholder must appear in the user section."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise CalibrateError(f"{where}: cannot read prompt file {path} ({error})") from None
    parts = SECTION.split(text)
    sections = {parts[i]: parts[i + 1].strip() for i in range(1, len(parts) - 1, 2)}
    if "user" not in sections:
        raise CalibrateError(f"{where}: prompt file {path} has no [user] section")
    missing = [p for p in PLACEHOLDERS if "{{" + p + "}}" not in sections["user"]]
    if missing:
        raise CalibrateError(f"{where}: prompt file {path} lacks the placeholder {{{{{missing[0]}}}}}")
    return PromptTemplate(path=path, system=sections.get("system", ""), user=sections["user"])
