from __future__ import annotations

import re

from tests.support import REPO
from tests.support.origin import Origin
from tests.support.stack import Stack

README = (REPO / "README.md").read_text()


def test_readme_opens_with_the_two_commands() -> None:
    opening = "\n".join(README.splitlines()[:12])
    assert "make run" in opening and "make test" in opening


def test_the_grammar_tables_examples_are_answered(stack: Stack, origin: Origin) -> None:
    """Each example URL of the README's grammar table, from the sample it names."""
    examples = re.findall(r"^\| [^|]+ \| [^|]+ \| `(/sample/image/\d+/[^`]+)` \|", README, re.M)
    assert len(examples) >= 10
    for image in {path.rsplit("/", 1)[0] for path in examples}:
        sample = REPO / "samples" / image.lstrip("/") / "original.jpg"
        origin.add(f"{image.lstrip('/')}/original.jpg", sample.read_bytes())
    for path in examples:
        answer = stack.get(path)
        assert answer.status == 200, (path, answer.data[:200])
