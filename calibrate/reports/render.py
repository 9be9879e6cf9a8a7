"""The report renderer: a report is built once as a list of blocks (headings, paragraphs, tables,
figures) and rendered twice: markdown with PNG files beside it, and one self-contained HTML page.

Names in a report come from data (categories, models, annotators, judges): both renderings escape
HTML in every text, so a name like `<img onerror=...>` stays text in a Markdown viewer or a notebook.
The CSV files meant for spreadsheets are written by `write_csv`, which defuses formulas.

Figures are drawn on explicit `matplotlib.figure.Figure` objects, never through pyplot's global
state, so importing calibrate leaves a notebook's plotting backend alone.
"""

from __future__ import annotations

import base64
import html
import io
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure


@dataclass
class Block:
    kind: str  # "h1" | "h2" | "p" | "table" | "figure"
    text: str = ""
    table: pd.DataFrame | None = None
    png: bytes = b""
    name: str = ""


# --------------------------------------------------------------------------- formatting


def fmt(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def with_ci(entry: dict, key: str = "value", ci_key: str = "ci") -> str:
    ci = entry.get(ci_key) or [None, None]
    return f"{fmt(entry.get(key))} [{fmt(ci[0])}, {fmt(ci[1])}]"


def signed_with_ci(entry: dict) -> str:
    if entry.get("error") is None:
        return "n/a"
    low, high = entry["error_ci"]
    return f"{entry['error']:+.1f} [{low:+.1f}, {high:+.1f}]"


def prompt_words(judge: dict) -> str:
    """", prompt `valbench-v2.txt`" for an LLM judge's record, so every report names the prompt variant."""
    return f", prompt `{judge['prompt']}`" if judge.get("prompt") else ""


# The HTML page's text column, and the figure size that fills it: a figure drawn FIGURE_WIDTH inches wide
# at DPI is saved (cropped to what it draws) no wider than the column, so the page shows it at full size
# and its text stays as legible as the page's own.
COLUMN_PX = 1100
DPI = 110
FIGURE_WIDTH = 9.5


def png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    return buffer.getvalue()


# A character reference (&lt; &#60;) would be decoded by a Markdown viewer: its `&` is escaped too.
_REFERENCE = re.compile(r"&(?=#?[0-9A-Za-z]+;)")


def markdown_text(text: str) -> str:
    """Text as Markdown shows it, never as HTML: `<` and `>` and character references escaped (a bare `&`,
    as in "Art & Culture", is left as it is: it is no HTML)."""
    return _REFERENCE.sub("&amp;", text).replace("<", "&lt;").replace(">", "&gt;")


def _markdown_table(table: pd.DataFrame) -> str:
    def cell(value) -> str:
        return markdown_text(str(value)).replace("|", "\\|").replace("\n", " ")

    header = "| " + " | ".join(cell(c) for c in table.columns) + " |"
    rule = "| " + " | ".join("---" for _ in table.columns) + " |"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def render_markdown(blocks: list[Block], figure_dir: Path, relative_to: Path) -> str:
    figure_dir.mkdir(parents=True, exist_ok=True)
    parts = []
    for block in blocks:
        if block.kind == "h1":
            parts.append(f"# {markdown_text(block.text)}")
        elif block.kind == "h2":
            parts.append(f"## {markdown_text(block.text)}")
        elif block.kind == "p":
            parts.append(markdown_text(block.text))
        elif block.kind == "table" and block.table is not None:
            parts.append(_markdown_table(block.table))
        elif block.kind == "figure":
            path = figure_dir / f"{block.name}.png"
            path.write_bytes(block.png)
            caption = markdown_text(block.text)
            parts.append(f"![{caption}]({path.relative_to(relative_to).as_posix()})\n\n*{caption}*")
    return "\n\n".join(parts) + "\n"


_CSS = f"body{{font-family:system-ui,sans-serif;max-width:{COLUMN_PX}px;" + """margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:0.85em}th,td{border:1px solid #ccc;padding:4px 8px;
text-align:left}th{background:#f3f3f3}figure{margin:1.5em 0}figcaption{color:#555;font-size:0.9em}
code{background:#f3f3f3;padding:1px 3px}img{max-width:100%}"""


def _inline_markdown(text: str) -> str:
    """The little markdown the report's paragraphs use: **bold** and `code`."""
    escaped = html.escape(text)
    parts = escaped.split("**")
    escaped = "".join(f"<strong>{p}</strong>" if i % 2 else p for i, p in enumerate(parts))
    parts = escaped.split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


# "6.9 [1.4, 15.3]": a number and its interval, which a table cell must never break across lines
_WITH_INTERVAL = re.compile(r"[-+]?\d[\d.,]*%? \[[^\]]*\]")


def _html_cell(value: object) -> str:
    """A table cell as HTML: escaped, with each number and its interval bound together."""
    return _WITH_INTERVAL.sub(lambda match: match.group(0).replace(" ", "&nbsp;"), html.escape(str(value)))


def _html_table(table: pd.DataFrame) -> str:
    shown = table.rename(columns=lambda column: html.escape(str(column))).astype(object).map(_html_cell)
    return shown.to_html(index=False, escape=False, border=0)


def render_html(blocks: list[Block], title: str) -> str:
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{_CSS}</style></head><body>"]
    for block in blocks:
        if block.kind in ("h1", "h2"):
            parts.append(f"<{block.kind}>{_inline_markdown(block.text)}</{block.kind}>")
        elif block.kind == "p":
            parts.append(f"<p>{_inline_markdown(block.text)}</p>")
        elif block.kind == "table" and block.table is not None:
            parts.append(_html_table(block.table))
        elif block.kind == "figure":
            data = base64.b64encode(block.png).decode("ascii")
            parts.append(f"<figure><img alt='{html.escape(block.text)}' src='data:image/png;base64,{data}'>"
                         f"<figcaption>{html.escape(block.text)}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts)


# A cell a spreadsheet would run as a formula starts with one of these (OWASP, "CSV injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def defused(value: object) -> object:
    """A text cell that starts like a formula, prefixed with a quote so a spreadsheet shows it as text;
    numbers (and text that is a plain number, e.g. "-1.5") as they are."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS) and not _PLAIN_NUMBER.fullmatch(value):
        return "'" + value
    return value


def write_csv(table: pd.DataFrame, path: Path) -> None:
    """A table as CSV for spreadsheets: text cells (names, notes, categories) defused, numeric columns
    untouched (a negative number stays a number)."""
    safe = table.copy()
    for column in safe.columns:
        if safe[column].dtype == object or pd.api.types.is_string_dtype(safe[column]):
            safe[column] = safe[column].map(defused)
    safe.rename(columns=lambda column: defused(str(column))).to_csv(path, index=False)


def write_report(blocks: list[Block], out_dir: Path, title: str) -> dict[str, Path]:
    """Write report.md (+ figures/) and a self-contained report.html into out_dir."""
    markdown_path, html_path = out_dir / "report.md", out_dir / "report.html"
    markdown_path.write_text(render_markdown(blocks, out_dir / "figures", out_dir), encoding="utf-8")
    html_path.write_text(render_html(blocks, title), encoding="utf-8")
    return {"report_md": markdown_path, "report_html": html_path}
