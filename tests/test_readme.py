from __future__ import annotations

import json
import re

from common.config import describe
from tests.support import REPO
from tests.support.origin import Origin
from tests.support.stack import Stack

README = (REPO / "README.md").read_text()


def test_readme_documents_every_config_key_with_its_type_and_default() -> None:
    wrong = []
    for name, type_name, default, _meaning in describe():
        row = re.search(rf"^\| `{re.escape(name)}` \| ([^|]+) \| ([^|]+) \|", README, re.M)
        shown = "required" if default == "(required)" else f"`{json.dumps(default)}`"
        if row is None or (row[1].strip(), row[2].strip()) != (type_name, shown):
            wrong.append(name)
    assert wrong == []


def test_readme_lists_the_keys_in_the_groups_and_order_of_the_code() -> None:
    # Settings (common/settings_served.py, then common/settings.py) declares its
    # keys in groups; the README's tables follow the same groups, in that order.
    section = README.split("\n## Configuration\n")[1].split("\n## ")[0]
    documented = re.findall(r"^\| `(\w+)` \| [^|]+ \| [^|]+ \|", section, re.M)
    assert [name for name, *_ in describe()] == documented


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
