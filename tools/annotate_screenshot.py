"""Regenerate docs/images/annotate.png: the labelling page of `calibrate annotate` at 1280 px wide.

    python tools/annotate_screenshot.py        (from the repository root; needs /usr/bin/chromium)

Serves a study of the bundled sample (8 pairs of unaligned-0 and aligned-100) from a throw-away labels
file, gives the first pair a score and a flag with the keyboard, and photographs the page.
"""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path

from playwright.sync_api import sync_playwright

from calibrate.workflows.annotate import annotate

OUT = Path("docs") / "images" / "annotate.png"


def main() -> None:
    ready = threading.Event()
    where: dict[str, str] = {}

    def on_ready(url: str, _session) -> None:
        where["url"] = url
        ready.set()

    with tempfile.TemporaryDirectory() as tmp:
        threading.Thread(target=annotate, daemon=True, kwargs=dict(
            labels=Path(tmp) / "labels.sqlite3", annotator="ada", sets=["unaligned-0", "aligned-100"], sample=8,
            seed=3, stratify="set", port=0, on_ready=on_ready)).start()
        ready.wait(30)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium")
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            page.goto(where["url"])
            page.locator("#progress").filter(has_text="pair 1 of 8").wait_for()
            for key in ("2", "w"):
                page.keyboard.press(key)
            page.screenshot(path=str(OUT), full_page=False)
            browser.close()
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
