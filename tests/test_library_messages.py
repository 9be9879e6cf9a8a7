"""Library messages name parameters, never CLI flags: outside calibrate/cli/, no string passed to a
`CalibrateError` or a warning mentions a `--flag` (the CLI rewords parameter names as its flags with
`CalibrateError.worded` and `cli.options.flag_for`)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from calibrate.cli.options import flag_for
from calibrate.errors import CalibrateError

PACKAGE = Path(__file__).resolve().parent.parent / "calibrate"
FLAG = re.compile(r"(?<![\w-])--[a-z]")
# Calls whose text reaches the user as a message: the error type, and warnings however they are sent.
MESSAGE_CALLS = {"CalibrateError", "warn", "warning", "info", "error"}


def call_name(call: ast.Call) -> str | None:
    func = call.func
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None


def message_texts(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, text) of every string constant inside the arguments of a message call, f-strings' literal
    parts included."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and call_name(node) in MESSAGE_CALLS:
            for argument in [*node.args, *(k.value for k in node.keywords)]:
                for inner in ast.walk(argument):
                    if isinstance(inner, ast.Constant) and isinstance(inner.value, str):
                        found.append((inner.lineno, inner.value))
    return found


def library_files() -> list[Path]:
    return [path for path in sorted(PACKAGE.rglob("*.py")) if "cli" not in path.relative_to(PACKAGE).parts]


def test_the_scan_finds_messages():
    """The scan reads real calls: the library has hundreds of messages, and a planted flag is caught."""
    assert sum(len(message_texts(ast.parse(p.read_text(encoding="utf-8")))) for p in library_files()) > 200
    planted = ast.parse('raise CalibrateError(f"use --limit {n}", ("limit",))\nlog.warning("see --max-cost")')
    assert [text for _, text in message_texts(planted) if FLAG.search(text)] == ["use --limit ", "see --max-cost"]


def test_no_library_message_names_a_cli_flag():
    offenders = [f"{path.relative_to(PACKAGE.parent)}:{line}: {text!r}"
                 for path in library_files()
                 for line, text in message_texts(ast.parse(path.read_text(encoding="utf-8")))
                 if FLAG.search(text)]
    assert offenders == []


def test_the_cli_rewords_parameters_as_flags():
    error = CalibrateError("limit must be positive; n_boot and max_cost too", ("limit", "n_boot", "max_cost"))
    assert error.worded(flag_for) == "--limit must be positive; --bootstrap and --max-cost too"
    assert str(error) == "limit must be positive; n_boot and max_cost too"
