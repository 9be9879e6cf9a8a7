"""The reports as a reader sees them: figures no wider than the HTML page's column, so the page shows
them at full size and their text as legible as its own (a wider figure is shrunk, and its labels with
it); table cells that never break a number away from its interval. docs/images/report-*.png are
screenshots of the example reports in headless Chromium (tools/screenshot_reports.py)."""

from __future__ import annotations

import struct
from pathlib import Path

import pandas as pd

from calibrate.reports.render import COLUMN_PX, Block, render_html

EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "examples"


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", header[16:24])


def test_every_example_figure_fits_the_html_column():
    figures = sorted(EXAMPLES.glob("*/figures/*.png"))
    assert len(figures) >= 11
    sizes = {f"{f.parent.parent.name}/{f.name}": png_size(f) for f in figures}
    assert {name: size for name, size in sizes.items() if size[0] > COLUMN_PX} == {}
    assert all(width >= 400 and height >= 250 for width, height in sizes.values())  # and none is a thumbnail


def test_html_tables_keep_each_interval_on_one_line_and_escape_text():
    table = pd.DataFrame({"judge <b>": ["<script>x</script>", "gpt"],
                          "PAC": ["6.9 [1.4, 15.3]", "-23.6 [-37.5, -11.1]"]})
    page = render_html([Block("table", table=table)], "report")
    assert "6.9&nbsp;[1.4,&nbsp;15.3]" in page and "-23.6&nbsp;[-37.5,&nbsp;-11.1]" in page
    assert "<script>" not in page and "&lt;script&gt;x&lt;/script&gt;" in page and "judge &lt;b&gt;" in page
