from __future__ import annotations

from common.config import describe
from tests.harness import REPO


def test_readme_documents_every_config_key() -> None:
    readme = (REPO / "README.md").read_text()
    missing = [name for name, *_ in describe() if f"| `{name}` |" not in readme]
    assert missing == []


def test_readme_opens_with_the_two_commands() -> None:
    opening = "\n".join((REPO / "README.md").read_text().splitlines()[:12])
    assert "make run" in opening and "make test" in opening
