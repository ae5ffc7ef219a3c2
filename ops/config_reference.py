"""The key tables of docs/configuration.md, made from the declarations
(common/settings_served.py, then common/settings.py): one table per group (a
declaration's `# Group.` comment line), each key with its type, default and
meaning as declared. `python -m ops.config_reference` rewrites the part of the
file between its two markers; tests/test_docs.py checks that it is current."""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path

from common import settings, settings_served
from common.config import describe
from common.settings import REPO_ROOT

DOCUMENT = REPO_ROOT / "docs" / "configuration.md"
BEGIN = "<!-- keys: made by `python -m ops.config_reference` from the declarations; edit those -->"
END = "<!-- end of keys -->"
_GROUP = re.compile(r"    # (.+)\.$")
_FIELD = re.compile(r"    (\w+): .+ = key\(")


def groups() -> list[tuple[str, list[str]]]:
    """(title, key names) of each group, in the order of declaration."""
    found: list[tuple[str, list[str]]] = []
    for module in (settings_served, settings):
        for line in inspect.getsource(module).splitlines():
            if title := _GROUP.match(line):
                found.append((title[1], []))
            elif field := _FIELD.match(line):
                found[-1][1].append(field[1])
    return found


def tables() -> str:
    rows = {name: (kind, default, meaning) for name, kind, default, meaning in describe()}
    parts = [BEGIN]
    for title, names in groups():
        parts += ["", f"**{title}**", "", "| key | type | default | meaning |", "|---|---|---|---|"]
        for name in names:
            kind, default, meaning = rows.pop(name)
            shown = "required" if default == "(required)" else f"`{json.dumps(default)}`"
            cell = meaning.replace("|", "\\|")  # a bar would end the cell
            parts.append(f"| `{name}` | {kind} | {shown} | {cell} |")
    assert not rows, f"keys outside any group: {sorted(rows)}"
    return "\n".join([*parts, "", END])


def current(document: str) -> str:
    """`document` with its key tables made anew."""
    head, rest = document.split(BEGIN, 1)
    return head + tables() + rest.split(END, 1)[1]


def main() -> None:
    DOCUMENT.write_text(current(DOCUMENT.read_text()))
    print(f"wrote the key tables of {Path(DOCUMENT).relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main()
