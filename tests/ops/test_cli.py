"""`image-server`'s habits: help with defaults, --version, the shared options
before or after the command, usage errors on stderr with exit status 2, and no
traceback for any input (in this process: argparse and the config are what
answer, before any command reaches a program or a server)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ops.cli import COMMANDS, main
from tests.support import REPO

IMAGE_SERVER = str(Path(sys.executable).parent / "image-server")
KEY = "k" * 32
KEYS = {
    "IMAGE_SERVER_SIGNING_KEYS": f'["{KEY}"]',
    "IMAGE_SERVER_PURGE_KEYS": f'["{KEY}"]',
    "IMAGE_SERVER_PREGENERATE_KEYS": f'["{KEY}"]',
}


def exit_of(argv: list[str]) -> int | str | None:
    """How `image-server argv` ended; any other exception fails the test (a traceback)."""
    with pytest.raises(SystemExit) as ended:
        main(argv)
        sys.exit(0)
    return ended.value.code


BAD_INPUTS = [["--no-such-option"], ["-e", "no-such-env"], ["garbage", "more garbage"]]


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_answers_bad_input_with_a_line_not_a_traceback(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for bad in BAD_INPUTS:
        code = exit_of([name, *bad])
        out, err = capsys.readouterr()
        assert code not in (0, None), (bad, out)
        # A usage error is exit status 2 and its line on stderr; any other refusal
        # is a message (sys.exit prints it on stderr, status 1), or doctor's FAIL line.
        usage = code == 2 and f"image-server {name}" in err
        failed_check = code == 1 and out.startswith("FAIL") and name == "doctor"
        assert usage or isinstance(code, str) or failed_check, (bad, out, err)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_help_with_its_defaults(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    if name == "version":  # takes no options
        return
    assert exit_of([name, "--help"]) == 0
    helped = capsys.readouterr().out
    assert helped.startswith(f"usage: image-server {name} "), helped
    assert ("--process-num" in helped) == COMMANDS[name].program, name
    assert "(default: development)" in helped or "IMAGE_SERVER_ENV" in os.environ, helped


def test_the_shared_options_may_come_before_the_command(
    capsys: pytest.CaptureFixture[str],
) -> None:
    config_dir = str(REPO / "config")
    exit_of(["-e", "test", f"--config-dir={config_dir}", "config"])
    before = capsys.readouterr().out
    exit_of(["config", "-e", "test", "--config-dir", config_dir])
    assert before == capsys.readouterr().out
    assert "server_port = 7100" in before  # config/test.json's, not development's


def test_usage_errors_are_exit_status_2_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in ([], ["no-such-command"], ["-e", "test"]):
        assert exit_of(argv) == 2
        out, err = capsys.readouterr()
        assert out == "" and err.startswith("image-server: "), err
    assert exit_of(["regenerate", "--prefix", "a", "--outputs", "w1.jpg", "--rate", "0"]) == 2
    assert "--rate: must be above 0" in capsys.readouterr().err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    for flag in ("--version", "-V", "version"):
        exit_of([flag])
        assert capsys.readouterr().out.startswith("image-server "), flag


@pytest.mark.parametrize(
    ("argv", "refused"),
    [
        (["sign", "garbage"], "expected /<model>/<imageType>/<id>/<output>"),
        (["sign", "https://cdn.example.com/user/avatar/1/w500.jpg"], "give the path alone"),
        (["sign", "/user/avatar/1/w500.jpg?x=1"], "give the path alone"),
        (["sign", "/user/avatar/1/w5000.jpg"], "above maximum_width"),
        (["sign", "/user/avatar/1/w500.pdf"], "'pdf' is not served"),
        (["sign-purge", "/user/avatar"], "an image is /<model>/<imageType>/<id>"),
        (["sign-pregenerate", "/user/avatar/1", "w500.pdf"], "'pdf' is not served"),
        (["sign-pregenerate", "/user/avatar/1", ","], "name the outputs"),
        (["regenerate", "--prefix", "user", "--outputs", "w500.pdf"], "'pdf' is not served"),
    ],
)
def test_the_tools_check_what_they_are_given_before_acting(
    argv: list[str], refused: str, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    for name, value in KEYS.items():
        monkeypatch.setenv(name, value)
    # regenerate would reach RabbitMQ and storage next: the outputs are refused first.
    monkeypatch.setenv("IMAGE_SERVER_AMQP_URL", "amqp://guest:guest@127.0.0.1:1/nobody")
    assert exit_of(argv) == 2
    assert refused in capsys.readouterr().err


def test_sign_prints_a_path_the_frontends_verify(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from common.signing import verify

    for name, value in KEYS.items():
        monkeypatch.setenv(name, value)
    exit_of(["sign", "/user/avatar/1/w500.jpg", "--source", "http://127.0.0.1:7080/a.jpg"])
    printed = capsys.readouterr().out.strip()
    path, _, query = printed.partition("?")
    params = dict(part.split("=", 1) for part in query.split("&"))
    assert path == "/user/avatar/1/w500.jpg" and set(params) == {"signature", "source"}
    verify([KEY], path, "http://127.0.0.1:7080/a.jpg", params["signature"])


def test_help_into_a_closed_pipe_is_not_a_traceback() -> None:
    """`image-server --help | head -1`: the reader may be gone before the help is written."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    done = subprocess.run(
        [IMAGE_SERVER, "--help"], stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60
    )
    os.close(write_end)
    assert done.returncode == 1
    assert done.stderr == ""
