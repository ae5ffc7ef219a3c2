"""The folders say what runs: the request path and what it shares never import
the operator's package (`ops/`), and each package is where docs/ARCHITECTURE.md
says it is."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support import REPO

REQUEST_PATH = ("frontend", "processor", "uploader", "common")


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_the_request_path_never_imports_ops() -> None:
    offenders = {
        str(path.relative_to(REPO)): sorted(
            m for m in imported_modules(path) if m.split(".")[0] == "ops"
        )
        for package in REQUEST_PATH
        for path in sorted((REPO / package).rglob("*.py"))
    }
    assert {name: mods for name, mods in offenders.items() if mods} == {}


def test_tests_take_their_oracles_from_testkit_not_from_the_benchmark() -> None:
    """Tests and bench share testkit/ (SSIM, the ImageMagick recipe, the corpus);
    no test depends on the benchmark's code."""
    offenders = {
        str(path.relative_to(REPO))
        for path in (REPO / "tests").rglob("*.py")
        if any(m.split(".")[0] == "bench" for m in imported_modules(path))
    }
    assert offenders == set()


def test_the_rule_sees_an_import_of_ops(tmp_path: Path) -> None:
    """The check above can fail: both spellings of an import are seen."""
    module = tmp_path / "module.py"
    module.write_text("import ops.janitor\nfrom ops import restart\nfrom common import amqp\n")
    assert imported_modules(module) == {"ops.janitor", "ops", "common"}


def test_every_program_and_tool_of_the_cli_lives_in_its_package() -> None:
    """A program's main is in its own package; every operator's tool in ops/."""
    from ops.cli import COMMANDS

    for name, command in COMMANDS.items():
        package = command.target.split(".")[0]
        if name in ("frontend", "processor", "uploader"):
            assert package == name, (name, command.target)
        elif name == "replay-uploads":
            assert package == "uploader", command.target  # it works on the uploader's queues
        else:
            assert package == "ops", (name, command.target)


def test_only_the_imaging_package_imports_libvips() -> None:
    """libvips is the processor's imaging package's: every other module of the
    product asks it (processor/imaging/), so its behaviour lives in one place."""
    offenders = {
        str(path.relative_to(REPO))
        for package in (*REQUEST_PATH, "ops")
        for path in sorted((REPO / package).rglob("*.py"))
        if "pyvips" in {m.split(".")[0] for m in imported_modules(path)}
        and path.parent != REPO / "processor" / "imaging"
    }
    assert offenders == set()
