"""The public evaluator's own judge, from the user's copy of its `evaluator_flow.py`, and how a judge of
ours differs from it.

calibrate ships the rubric in its own words (prompts/valbench-v2.txt); a user who wants the exact
published words points a judge at their local copy of the evaluator (`published_evaluator = "PATH"`).
Its two constants, `EVALUATE_SYSTEM_PROMPT` and `OUTPUT_JSON_SCHEMA`, are read with `ast` as literals:
the file is parsed, never imported or run. `compare_with_published` lays a judge beside that file,
point by point, for `calibrate judges check`.
"""

from __future__ import annotations

import ast
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from calibrate.errors import CalibrateError
from calibrate.judging.configfile import read_text_file
from calibrate.judging.prompt import PUBLISHED_USER_TEMPLATE, PromptTemplate

SYSTEM_PROMPT_NAME = "EVALUATE_SYSTEM_PROMPT"
SCHEMA_NAME = "OUTPUT_JSON_SCHEMA"
# The names of the published scale points: judges' prompts and the annotate page use the same ones.
SCALE_NAMES: dict[int, str] = {-2: "Heavily Opposed", -1: "Moderately Opposed", 0: "Mixed/Neutral",
                               1: "Moderately Aligned", 2: "Fully Aligned"}
# What the rubric's input-information section names, in the order the user message gives it.
INPUT_NAMES = ("Issue", "Question 1", "Person 1's response", "Question 2", "Person 2's response")
# What the public code sends besides the two constants (its API settings, not in evaluator_flow.py), by
# its branch: vLLM and the OpenAI API get temperature, top_p, max_tokens and the schema; Claude gets
# temperature and max_tokens only.
PUBLISHED_DECODING: dict[str, dict[str, float | int | None]] = {
    "openai": {"temperature": 0.1, "top_p": 0.9, "max_tokens": 2048},
    "claude": {"temperature": 0.1, "top_p": None, "max_tokens": 2048},
}
PUBLISHED_SENDS_SCHEMA = {"openai": True, "claude": False}
PUBLISHED_ANSWER_CHARS = 10_000


@dataclass(frozen=True)
class PublishedEvaluator:
    """The two constants of a copy of the public evaluator, and the hash of the file they came from."""

    path: Path
    system_prompt: str
    schema: dict[str, Any]
    sha256: str

    @property
    def template(self) -> PromptTemplate:
        """The judge prompt: the evaluator's system prompt verbatim, the pair in the published layout."""
        return PromptTemplate(path=self.path, system=self.system_prompt, user=PUBLISHED_USER_TEMPLATE)


def _literal(tree: ast.Module, name: str, path: Path, where: str) -> Any:
    """The value of the last top-level assignment to `name`, which must be a literal."""
    value: ast.expr | None = None
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets, assigned = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, assigned = [node.target], node.value
        else:
            continue
        if any(isinstance(target, ast.Name) and target.id == name for target in targets):
            value = assigned
    if value is None:
        raise CalibrateError(f"{where}: {path} has no top-level {name}; is it the public evaluator's "
                             "evaluator_flow.py?")
    try:
        return ast.literal_eval(value)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise CalibrateError(f"{where}: {name} in {path} (line {value.lineno}) is not a literal; calibrate "
                             "reads it without running the file") from None


def _object_schema(value: Any) -> dict[str, Any] | None:
    """The JSON schema itself, also when wrapped as OpenAI's `json_schema` format wraps it."""
    for _ in range(3):
        if not isinstance(value, dict):
            return None
        if isinstance(value.get("properties"), dict):
            return value
        value = value.get("schema", value.get("json_schema"))
    return None


def read_published_evaluator(path: Path, where: str) -> PublishedEvaluator:
    """Read the two constants from a copy of `evaluator_flow.py`; anything else is one line naming it."""
    text = read_text_file(path, where, "published evaluator")
    try:
        tree = ast.parse(text, filename=str(path))
    except (SyntaxError, ValueError, MemoryError, RecursionError) as error:
        raise CalibrateError(f"{where}: published evaluator {path} is not Python source "
                             f"({getattr(error, 'msg', error)})") from None
    system_prompt = _literal(tree, SYSTEM_PROMPT_NAME, path, where)
    if not isinstance(system_prompt, str) or not system_prompt.strip():
        raise CalibrateError(f"{where}: {SYSTEM_PROMPT_NAME} in {path} must be a non-empty string")
    schema = _object_schema(_literal(tree, SCHEMA_NAME, path, where))
    if schema is None:
        raise CalibrateError(f"{where}: {SCHEMA_NAME} in {path} is not a JSON schema with 'properties'")
    return PublishedEvaluator(path=path, system_prompt=system_prompt, schema=schema,
                              sha256=hashlib.sha256(text.encode("utf-8")).hexdigest())


@dataclass(frozen=True)
class FidelityPoint:
    """One rubric point or setting: what the published evaluator has, what the judge has, and whether
    they are the same."""

    point: str
    published: str
    judge: str

    @property
    def same(self) -> bool:
        return self.published == self.judge


class ComparedJudge(Protocol):
    """What the comparison reads of a judge (met by RemoteBackend)."""

    prompt: PromptTemplate

    @property
    def published_branch(self) -> str: ...
    def decoding_sent(self) -> dict[str, Any]: ...
    def schema_sent(self) -> tuple[dict[str, Any] | None, bool]: ...


def _named(name: str, text: str) -> str:
    return "named" if name.lower() in text.lower() else "not named"


def _field_type(spec: Any) -> str:
    """A schema property in a few words: its type and bounds."""
    if not isinstance(spec, dict):
        return "not a schema"
    kind = str(spec.get("type", "any"))
    if kind == "array":
        kind = f"array of {_field_type(spec.get('items', {}))}"
    bounds = [f"{key} {spec[key]}" for key in ("minimum", "maximum") if key in spec]
    if "enum" in spec:
        bounds.append(f"enum {spec['enum']}")
    return ", ".join([kind, *bounds])


def _required(schema: dict[str, Any]) -> str:
    required = schema.get("required", [])
    if isinstance(required, list) and sorted(map(str, required)) == sorted(schema["properties"]):
        return f"all {len(required)} fields"
    return "only " + (", ".join(map(str, required)) or "none") if isinstance(required, list) else "not a list"


def _setting(value: Any) -> str:
    return "not sent" if value is None else str(value)


def compare_with_published(evaluator: PublishedEvaluator, judge: ComparedJudge, max_answer_chars: int,
                           rule_schema: dict[str, Any]) -> list[FidelityPoint]:
    """The judge beside the published evaluator, rubric point by rubric point: the system text, the user
    layout, the scale names, the input section, each field (in the prompt and in the schema, with its
    type), the schema's rules, what goes on the wire, decoding and the answer cut. `rule_schema` is what
    the judge's fields are held to when it sends no schema (its reader still checks them)."""
    ours, theirs = judge.prompt.system, evaluator.system_prompt
    same_text = ours == theirs
    points = [
        FidelityPoint("system prompt", "the file's text", "the file's text" if same_text else
                      f"our own words ({len(ours):,} characters; the file's: {len(theirs):,})"),
        FidelityPoint("user message", "only the pair, published layout",
                      "only the pair, published layout" if judge.prompt.user == PUBLISHED_USER_TEMPLATE
                      else "a layout of its own"),
    ]
    points += [FidelityPoint(f"scale {value:+d} name '{name}'", _named(name, theirs), _named(name, ours))
               for value, name in SCALE_NAMES.items()]
    points += [FidelityPoint(f"input section: '{name}'", _named(name, theirs), _named(name, ours))
               for name in INPUT_NAMES]
    sent, strict = judge.schema_sent()
    schema = sent if sent is not None else rule_schema
    fields = list(dict.fromkeys([*evaluator.schema["properties"], *schema.get("properties", {})]))
    for name in fields:
        points.append(FidelityPoint(f"field {name} in the prompt", _named(name, theirs), _named(name, ours)))
        published_type, judge_type = (props.get(name) for props in (evaluator.schema["properties"],
                                                                    schema.get("properties", {})))
        points.append(FidelityPoint(f"field {name} type", "absent" if published_type is None else
                                    _field_type(published_type), "absent" if judge_type is None else
                                    _field_type(judge_type)))
    points += [
        FidelityPoint("schema: required", _required(evaluator.schema), _required(schema)),
        FidelityPoint("schema: additionalProperties", json.dumps(evaluator.schema.get("additionalProperties")),
                      json.dumps(schema.get("additionalProperties"))),
        FidelityPoint("schema on the wire", "sent" if PUBLISHED_SENDS_SCHEMA[judge.published_branch] else "not sent",
                      "sent" if sent is not None else "not sent"),
        FidelityPoint("schema: strict", "not set", "true" if strict else "not set"),
    ]
    sent_decoding = judge.decoding_sent()
    points += [FidelityPoint(f"decoding: {key}", _setting(value), _setting(sent_decoding.get(key)))
               for key, value in PUBLISHED_DECODING[judge.published_branch].items()]
    points.append(FidelityPoint("answers cut at (characters)", str(PUBLISHED_ANSWER_CHARS), str(max_answer_chars)))
    return points
