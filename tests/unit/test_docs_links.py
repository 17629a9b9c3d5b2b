"""Every relative link in the README and docs/ leads somewhere: the file exists and, with a ``#anchor``,
the target has a heading of that name (GitHub's heading slugs)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from helpers import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]*)\)")


def slug(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {slug(m.group(1)) for m in re.finditer(r"^#+ (.*)$", path.read_text(), re.M)}


def test_slugs_follow_github() -> None:
    assert slug("The write gate (`supervisor/cluster/writegate.py`)") == "the-write-gate-supervisorclusterwritegatepy"
    assert (
        slug("6.3 Rolling restart, upgrades, configuration changes")
        == "63-rolling-restart-upgrades-configuration-changes"
    )


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_relative_links_resolve(doc: Path) -> None:
    broken = []
    for target in LINK.findall(doc.read_text()):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        file, _, anchor = target.partition("#")
        path = (doc.parent / file).resolve() if file else doc
        if not path.exists():
            broken.append(target)
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            broken.append(target)
    assert broken == []
