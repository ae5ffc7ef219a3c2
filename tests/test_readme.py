from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pyvips

from tests.support import REPO
from tests.support.origin import Origin
from tests.support.stack import Stack
from tests.support.waiting import wait_until

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


def test_the_quick_starts_commands_run_against_a_host(
    stack: Stack, origin: Origin, tmp_path: Path
) -> None:
    """The README's first commands, as typed (curl), against a running stack: each
    output is an image of the format its name says; the status server is healthy."""
    block = README.split("Then, in another terminal", 1)[1].split("```sh", 1)[1].split("```")[0]
    lines = [line.split("#")[0].strip() for line in block.splitlines() if line.startswith("curl")]
    assert len(lines) >= 6
    for image in {"1", "2", "3"}:
        sample = REPO / "samples" / "sample" / "image" / image / "original.jpg"
        origin.add(f"sample/image/{image}/original.jpg", sample.read_bytes())
    wait_until(lambda: stack.get("/health").status == 200, what="the host healthy")
    for line in lines:
        typed = line.replace("localhost:7000", f"127.0.0.1:{stack.config['server_port']}")
        typed = typed.replace("localhost:7001", f"127.0.0.1:{stack.config['status_port']}")
        done = subprocess.run(
            ["bash", "-c", typed], cwd=tmp_path, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, (line, done.stderr)
        if " -o " in line:
            name = line.split(" -o ")[1].split()[0]
            made = pyvips.Image.new_from_file(str(tmp_path / name))
            loader = {"jpg": "jpegload", "webp": "webpload"}[name.rsplit(".", 1)[1]]
            assert made.get("vips-loader") == loader, (line, made.get("vips-loader"))
        else:
            assert json.loads(done.stdout)["healthy"] is True, done.stdout
