"""Terminal tables that fit the terminal: names wrap, a number and its interval never split across lines,
and the columns that do not fit beside the others go into a continuation table under the first (the
name column repeated), instead of the terminal wrapping every row."""

from __future__ import annotations

from rich import box
from rich.cells import cell_len
from rich.console import Console
from rich.table import Table

NAME_MIN = 14  # the first column (set, model, judge names) wraps down to this width, no narrower
COLUMN_COST = 3  # a column's padding (one space each side) and the rule between columns


def _least_width(header: str, cells: list[str]) -> int:
    """The narrowest a value column can be: its longest cell line whole, its header wrapped at spaces."""
    return max([cell_len(word) for word in header.split()] + [_widest_line(cell) for cell in cells] + [1])


def _widest_line(text: str) -> int:
    """A cell's width: its widest line (a cell may hold several values, one a line)."""
    return max(map(cell_len, text.splitlines() or [""]))


def _name_width(headers: list[str], rows: list[list[str]]) -> int:
    """The narrowest the name column may wrap to: its longest word, at most NAME_MIN."""
    words = [word for text in [headers[0], *(row[0] for row in rows)] for word in text.split()]
    return min(NAME_MIN, max(map(cell_len, words), default=1))


def column_groups(headers: list[str], rows: list[list[str]], width: int) -> list[list[int]]:
    """Indices of the value columns (every column but the first) in tables that each fit `width`: a
    column goes into the first table with room for it, so the tables keep the columns' order."""
    room = width - 1 - _name_width(headers, rows) - COLUMN_COST
    groups: list[list[int]] = []
    used: list[int] = []
    for index in range(1, len(headers)):
        need = _least_width(headers[index], [row[index] for row in rows]) + COLUMN_COST
        for number, group in enumerate(groups):
            if used[number] + need <= room:
                group.append(index)
                used[number] += need
                break
        else:
            groups.append([index])
            used.append(need)
    return groups


def print_table(out: Console, title: str, headers: list[str], rows: list[list[str]],
                text_columns: tuple[str, ...] = ()) -> None:
    """Print rows under headers (the first column names the row and is left-aligned, the rest are
    right-aligned values; a cell may hold several, one a line) under one title, in as many tables as
    `out`'s width needs. Every width is set here, so rich never squeezes a value column: only names and
    headers wrap. Columns named in `text_columns` hold words, not numbers, and are left-aligned."""
    out.print(title, style="bold", markup=False, highlight=False)
    longest_name = max(_widest_line(text) for text in [headers[0], *(row[0] for row in rows)])
    for group in column_groups(headers, rows, out.width):
        widths = {index: _least_width(headers[index], [row[index] for row in rows]) for index in group}
        left = out.width - 1 - sum(width + COLUMN_COST for width in widths.values()) - COLUMN_COST
        table = Table(box=box.SIMPLE_HEAD)
        table.add_column(headers[0], justify="left", overflow="fold",
                         width=max(_name_width(headers, rows), min(longest_name, left)))
        for index in group:
            table.add_column(headers[index], justify="left" if headers[index] in text_columns else "right",
                             width=widths[index])
        for row in rows:
            table.add_row(row[0], *(row[index] for index in group))
        out.print(table, soft_wrap=False)
