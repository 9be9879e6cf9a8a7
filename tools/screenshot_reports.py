"""Screenshots of the example HTML reports as a reader's browser shows them, for the docs.

    python tools/screenshot_reports.py        (from the repository root, after tools/make_examples.py)

Opens docs/examples/{heuristic,comparison,score-heuristic}/report.html in headless Chromium
(`chromium` on the PATH, e.g. Debian's package) in a window 1280 px wide, and saves each page, cut below
its last content, as docs/images/report-{fit,compare,score}.png.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

REPORTS = {"fit": "heuristic", "compare": "comparison", "score": "score-heuristic"}
WIDTH, TALLEST = 1280, 16000  # the window; a page shorter than TALLEST is cut below its content
MARGIN = 40


def screenshot(page: Path, target: Path) -> Path:
    """Save `page` as the browser draws it at WIDTH px, without the blank window below the page."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise SystemExit("chromium is not installed (Debian: apt-get install chromium)")
    with tempfile.TemporaryDirectory() as scratch:
        raw = Path(scratch) / "page.png"
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--window-size={WIDTH},{TALLEST}", f"--screenshot={raw}", page.resolve().as_uri()],
                       check=True, capture_output=True, timeout=180)
        image = Image.open(raw).convert("RGB")
    pixels = np.asarray(image)
    drawn = np.flatnonzero((pixels < 250).any(axis=(1, 2)))
    bottom = min(image.height, int(drawn[-1]) + MARGIN) if drawn.size else image.height
    target.parent.mkdir(parents=True, exist_ok=True)
    image.crop((0, 0, image.width, bottom)).save(target, optimize=True)
    return target


if __name__ == "__main__":
    for kind, folder in REPORTS.items():
        saved = screenshot(Path("docs/examples") / folder / "report.html", Path("docs/images") / f"report-{kind}.png")
        print(f"{kind:<8} {saved} {Image.open(saved).size}")
