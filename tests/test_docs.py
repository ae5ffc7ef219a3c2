"""The manual: README.md and docs/. Every relative link leads to a file of the
repository and, with an #anchor, to a heading of it; the key tables of
docs/configuration.md are the declarations' own; the README stays short."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from ops import config_reference
from tests.support import REPO

MANUAL = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.M | re.S)


def anchors(document: Path) -> set[str]:
    """GitHub's anchors of the document's headings."""
    text = FENCE.sub("", document.read_text())
    headings = re.findall(r"^#+ (.+)$", text, re.M)
    return {
        re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-") for heading in headings
    }


def test_every_link_of_the_manual_leads_somewhere() -> None:
    broken = []
    for document in MANUAL:
        for target in LINK.findall(FENCE.sub("", document.read_text())):
            if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            linked = (document.parent / path).resolve() if path else document
            if not linked.exists():
                broken.append(f"{document.name}: {target} (no such file)")
            elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                broken.append(f"{document.name}: {target} (no such heading)")
    assert broken == []


def test_mkdocs_builds_the_manual_strictly(tmp_path: Path) -> None:
    """A site of docs/ (mkdocs.yml): a warning, such as a link to a heading that
    does not exist, fails the build."""
    built = subprocess.run(
        [str(Path(sys.executable).parent / "mkdocs"), "build", "--strict", "-d", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-2000:]
    assert "WARNING" not in built.stderr, built.stderr[-2000:]
    assert (tmp_path / "configuration" / "index.html").exists()


def test_the_configuration_reference_is_made_from_the_declarations() -> None:
    document = config_reference.DOCUMENT.read_text()
    assert config_reference.current(document) == document, "run python -m ops.config_reference"


def test_the_readme_is_short_and_says_what_the_service_is_first() -> None:
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= 400, len(lines)
    assert "image resizing" in lines[0]
