"""Judge prompt templates: files under judges/prompts/ with [system] and [user] sections, or a plain
system-prompt file with the published user layout.

Placeholders are {{issue_description}}, {{question_1}}, {{response_1}}, {{question_2}} and
{{response_2}}. An answer longer than the limit is cut, the number of characters cut being recorded
with the judgment. A faithful template passes answers as the public evaluator does: cut, otherwise
untouched. A guarded template (one that puts each answer between <<<RESPONSE_n ... RESPONSE_n>>>
markers) treats answers as data: any copy of the markers inside an answer is defused so an answer
cannot close its own block, and a cut answer ends with an explicit note.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from calibrate.errors import CalibrateError
from calibrate.judging.base import PairView
from calibrate.judging.configfile import read_text_file

PLACEHOLDERS = ("issue_description", "question_1", "response_1", "question_2", "response_2")
SECTION = re.compile(r"^\[(system|user)\]\s*$", re.MULTILINE)
MARKER = re.compile(r"<{3,}|>{3,}")  # a whole run: defusing "<<<<<" must not leave "<<<" behind
PLACEHOLDER = re.compile(r"\{\{(" + "|".join(PLACEHOLDERS) + r")\}\}")
# The public evaluator's user message: only the pair, the rubric being the system message.
PUBLISHED_USER_TEMPLATE = ("Issue: {{issue_description}}\n\nQuestion 1: {{question_1}}\n\n"
                           "Person 1's response: {{response_1}}\n\nQuestion 2: {{question_2}}\n\n"
                           "Person 2's response: {{response_2}}")


@dataclass(frozen=True)
class PromptTemplate:
    path: Path
    system: str
    user: str

    @cached_property
    def _pieces(self) -> list[str]:
        """The user section split at its placeholders: literal, name, literal, name, ..."""
        return PLACEHOLDER.split(self.user)

    @cached_property
    def guarded(self) -> bool:
        """A template that marks where each answer starts and ends, and so defuses copies of the marks."""
        return MARKER.search(self.user) is not None

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
                if self.guarded:
                    note = (f"\n[... answer truncated by the evaluator: "
                            f"{len(answer) - max_answer_chars} more characters not shown]")
                answer = answer[:max_answer_chars]
            if self.guarded and ("<<<" in answer or ">>>" in answer):
                answer = MARKER.sub(lambda m: " ".join(m.group(0)), answer)
            values[key] = answer + note
        pieces = self._pieces
        user = "".join(values[piece] if i % 2 else piece for i, piece in enumerate(pieces))
        messages = [{"role": "user", "content": user}]
        if self.system:
            messages.insert(0, {"role": "system", "content": self.system})
        return messages, cut


def _checked(template: PromptTemplate, where: str, what: str) -> PromptTemplate:
    missing = [p for p in PLACEHOLDERS if "{{" + p + "}}" not in template.user]
    if missing:
        raise CalibrateError(f"{where}: {what} lacks the placeholder {{{{{missing[0]}}}}}")
    return template


def load_prompt(path: Path, where: str) -> PromptTemplate:
    """Read and check a prompt file; every placeholder must appear in the user section."""
    parts = SECTION.split(read_text_file(path, where, "prompt file"))
    sections = {parts[i]: parts[i + 1].strip() for i in range(1, len(parts) - 1, 2)}
    if "user" not in sections:
        raise CalibrateError(f"{where}: prompt file {path} has no [user] section")
    return _checked(PromptTemplate(path=path, system=sections.get("system", ""), user=sections["user"]), where,
                    f"prompt file {path}")


def load_system_prompt(system_path: Path, user_path: Path | None, where: str) -> PromptTemplate:
    """A system prompt taken verbatim from a plain text file (for example the public evaluator's own
    rubric), with a user template from `user_path` or, by default, the published layout."""
    system = read_text_file(system_path, where, "system prompt file").strip()
    if not system:
        raise CalibrateError(f"{where}: system prompt file {system_path} is empty")
    user = read_text_file(user_path, where, "user template file").strip() if user_path else PUBLISHED_USER_TEMPLATE
    what = f"user template file {user_path}" if user_path else "the published user layout"
    return _checked(PromptTemplate(path=system_path, system=system, user=user), where, what)
