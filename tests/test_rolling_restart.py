"""`make restart` under load: every process replaced, not one request failed.

supervisord runs the project's own supervisord.conf (a copy whose var/ paths
point into the test's directory) with two frontends and two processors;
wrk keeps 8 connections busy with hits and misses while ops.restart
replaces each process in turn, after a config change that the new processes
must show.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from common import metrics
from tests.support import REPO
from tests.support.images import photo
from tests.support.origin import Origin
from tests.support.stack import Stack
from tests.support.waiting import wait_until

IMAGES = 6
# Mostly hits (the outputs warmed below), and a new width now and then: a miss
# that a processor must resize while processors restart too.
WRK_SCRIPT = """
local counter = 0
request = function()
  counter = counter + 1
  local image = counter %% %(images)d
  if counter %% 10 == 0 then
    local width = 100 + math.floor(counter / 10) %% 900
    return wrk.format("GET", "/roll/img/" .. image .. "/w" .. width .. ".jpg")
  end
  return wrk.format("GET", "/roll/img/" .. image .. "/w300.jpg")
end
"""


def supervisor_config(workdir: Path) -> Path:
    """The project's supervisord.conf with its var/ paths moved into `workdir`."""
    text = (REPO / "supervisord.conf").read_text()
    text = text.replace("%(here)s/var/", f"{workdir}/var/").replace("%(here)s", str(REPO))
    conf = workdir / "supervisord.conf"
    conf.write_text(text)
    for directory in ("run", "log"):
        (workdir / "var" / directory).mkdir(parents=True, exist_ok=True)
    return conf


@pytest.mark.timeout(480)  # its own waits: 60 s to start, the restart up to 300 s, wrk's summary
def test_rolling_restart_under_load_fails_no_request(
    make_stack: Callable[..., Stack], origin: Origin, tmp_path: Path
) -> None:
    stack = make_stack()  # its config and vhost; supervisord starts the programs
    for index in range(IMAGES):
        origin.add(f"roll/img/{index}/original.jpg", photo())
    conf = supervisor_config(tmp_path)
    environment = {
        **os.environ,
        "IMAGE_SERVER_ENV": "test",
        "IMAGE_SERVER_CONFIG_DIR": str(stack.workdir / "config"),
        "IMAGE_SERVER_FRONTENDS": "2",
        "IMAGE_SERVER_PROCESSORS": "2",
        "IMAGE_SERVER_DEV_SERVICES": "false",
    }
    supervisord = subprocess.Popen(
        [sys.executable, "-m", "supervisor.supervisord", "-n", "-c", str(conf)],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    metrics_dir = Path(stack.config["metrics_path"])
    try:
        wait_until(
            lambda: len(metrics.serving_pids(metrics_dir)) == 5,  # 2 + 2 + the uploader
            timeout_s=60,
            what="every program serving",
        )
        for index in range(IMAGES):
            assert stack.get(f"/roll/img/{index}/w300.jpg").status == 200
        before = set(metrics.serving_pids(metrics_dir))
        # The config change the restart must bring live.
        config_file = stack.workdir / "config" / "test.json"
        changed = {**json.loads(config_file.read_text()), "cache_max_age_s": 4321}
        config_file.write_text(json.dumps(changed))

        script = tmp_path / "roll.lua"
        script.write_text(WRK_SCRIPT % {"images": IMAGES})
        wrk = subprocess.Popen(
            ["wrk", "-t2", "-c8", "-d120s", "-s", str(script), stack.base_url],
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(3)  # load running before the first stop
        restart = subprocess.run(
            [str(Path(sys.executable).parent / "image-server"), "restart", "-e", "test",
             "--config-dir", str(stack.workdir / "config"),
             "--socket", str(tmp_path / "var/run/supervisor.sock")],
            cwd=REPO, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        time.sleep(3)  # load running after the last start
        assert wrk.poll() is None, "wrk ended before the restart was over"
        wrk.send_signal(signal.SIGINT)  # wrk stops and prints its summary
        report, _ = wrk.communicate(timeout=30)
        assert restart.returncode == 0, restart.stdout + restart.stderr
        assert "rolling restart done" in restart.stdout

        replaced = re.findall(r"^([\w-]+:\w+): pid \d+ -> \d+, (serving|running)",
                              restart.stdout, re.M)  # fmt: skip
        assert replaced == [
            ("image-server:frontend_0", "serving"), ("image-server:frontend_1", "serving"),
            ("image-server:processor_0", "serving"), ("image-server:processor_1", "serving"),
            ("image-server:uploader", "serving"), ("image-server:status", "running"),
            ("image-server:janitor", "running"),
        ], restart.stdout  # fmt: skip
        # Five processes serve, none of them an old one, and they are the ones supervisord
        # runs (its own account, not the figures of the code under test).
        after = set(metrics.serving_pids(metrics_dir))
        assert len(before) == len(after) == 5 and not (after & before), (before, after)
        status = subprocess.run(
            [str(Path(sys.executable).parent / "supervisorctl"), "-c", str(conf), "status"],
            capture_output=True, text=True, timeout=30,
        ).stdout  # fmt: skip
        running = re.findall(
            r"^image-server:(?:frontend|processor)_\d+\s+RUNNING\s+pid (\d+)"
            r"|^image-server:uploader\s+RUNNING\s+pid (\d+)",
            status,
            re.M,
        )
        assert {int(a or b) for a, b in running} == after, status

        answered = re.search(r"(\d+) requests in", report)
        assert answered is not None and int(answered.group(1)) > 500, report
        assert "Non-2xx or 3xx responses" not in report, report
        assert "Socket errors" not in report, report
        # The new processes read the changed config.
        for _ in range(4):  # new connections: both frontends answer
            answer = stack.http.request("GET", stack.base_url + "/roll/img/0/w300.jpg",
                                        headers={"Connection": "close"})  # fmt: skip
            assert answer.headers["Cache-Control"] == "public, max-age=4321"
    finally:
        supervisord.send_signal(signal.SIGTERM)
        supervisord.wait(60)
