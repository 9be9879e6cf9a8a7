"""Every relative link in the README and docs/ leads somewhere: the file exists and, for `file#anchor`,
the file has a heading with that anchor (GitHub's slugs). Moving a section or an example breaks a test,
not a reader."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LINK = re.compile(r"\]\(([^)\s]+)\)|href=\"([^\"]+)\"|src=\"([^\"]+)\"")


def slug(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    return {slug(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}


def test_relative_links_in_readme_and_docs_resolve():
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "reports" / "README.md"]
    broken, checked = [], 0
    for page in pages:
        for match in LINK.finditer(page.read_text(encoding="utf-8")):
            target = next(group for group in match.groups() if group)
            if re.match(r"[a-z]+:", target):
                continue  # https:, mailto:, data:
            file_part, _, anchor = target.partition("#")
            resolved = (page.parent / file_part).resolve() if file_part else page
            checked += 1
            if not resolved.exists():
                broken.append(f"{page.name}: {target}")
            elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert checked >= 30
    assert broken == []
