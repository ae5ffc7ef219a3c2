"""The manual: README.md and docs/. Every relative link leads to a file of the
repository and, with an #anchor, to a heading of it; the key tables of
docs/configuration.md are the declarations' own; the README stays short."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from ops import config_reference
from ops.cli import COMMANDS, main
from tests.support import REPO

MANUAL = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^ *```.*?^ *```", re.M | re.S)


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


# `image-server <command> ...` where the manual tells an operator to type it: a line of a
# code block, or a code span (`.venv/bin/image-server ...`, `image-server ...`).
TYPED = re.compile(r"(?:^|bin/|`)image-server ([a-z][a-z-]*)([^`|#)\n]*)", re.M)


def typed_commands() -> list[tuple[str, str, list[str]]]:
    """(document, command, its options) of every command the manual shows."""
    found = []
    for document in MANUAL:
        if document.name == "ARCHITECTURE.md":  # names modules, shows no command to type
            continue
        text = document.read_text().replace("\\\n", " ")  # a command continued on the next line
        code = "\n".join(block.strip(" `") for block in FENCE.findall(text))
        spans = "\n".join(re.findall(r"`([^`\n]+)`", FENCE.sub("", text)))
        for command, rest in TYPED.findall(code + "\n" + spans):
            options = re.findall(r"(?<!\S)(--?[a-zA-Z][a-z-]*)", rest)
            found.append((document.name, command, options))
    return found


def test_every_command_the_manual_shows_exists_with_its_options(
    capsys: pytest.CaptureFixture[str],
) -> None:
    shown = typed_commands()
    assert len(shown) >= 20
    wrong = []
    for document, command, options in shown:
        if command not in COMMANDS:
            wrong.append(f"{document}: image-server {command}: no such command")
            continue
        with pytest.raises(SystemExit):
            main([command, "--help"] if command != "version" else ["--help"])
        helped = capsys.readouterr().out
        wrong += [f"{document}: image-server {command} {o}" for o in options if o not in helped]
    assert wrong == []


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
