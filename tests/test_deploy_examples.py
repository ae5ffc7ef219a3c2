"""The example files of deploy/examples/ through their own tools: Prometheus'
promtool checks the scrape job, HAProxy checks its front and then runs it in
front of a real stack, one host up and one gone. (RabbitMQ's example file is
prose for an operator's broker: the tests' broker runs with its WAL line,
scripts/ensure-rabbitmq.sh.)"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import urllib3

from tests.support import REPO
from tests.support.images import photo
from tests.support.origin import Origin
from tests.support.ports import free_port
from tests.support.stack import Stack
from tests.support.waiting import wait_until

EXAMPLES = REPO / "deploy" / "examples"


def test_the_prometheus_scrape_job_checks(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("operator-token-of-the-tests\n")
    text = (EXAMPLES / "prometheus.yml").read_text()
    text = text.replace("/etc/prometheus/image-server-status-token", str(token))
    config = tmp_path / "prometheus.yml"
    config.write_text(text.replace("../alerts.yml", str(REPO / "deploy" / "alerts.yml")))
    checked = subprocess.run(
        ["promtool", "check", "config", str(config)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 1 rule files found" in checked.stdout, checked.stdout


def haproxy() -> str:
    found = shutil.which("haproxy") or "/usr/sbin/haproxy"
    assert Path(found).exists(), "`make test` installs Debian's haproxy"
    return found


def test_the_haproxy_front_checks_as_shipped() -> None:
    done = subprocess.run(
        [haproxy(), "-c", "-f", str(EXAMPLES / "haproxy.cfg")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_haproxy_front_serves_from_the_host_that_is_up(
    stack: Stack, origin: Origin, tmp_path: Path
) -> None:
    port = free_port()
    text = (EXAMPLES / "haproxy.cfg").read_text().replace("bind :80", f"bind 127.0.0.1:{port}")
    text = re.sub(r"images-1\.internal:7000", f"127.0.0.1:{stack.config['server_port']}", text)
    text = re.sub(r"images-2\.internal:7000", f"127.0.0.1:{free_port()}", text)  # nobody there
    config = tmp_path / "haproxy.cfg"
    config.write_text(text)
    wait_until(lambda: stack.get("/health").status == 200, what="the host healthy")
    front = subprocess.Popen([haproxy(), "-db", "-f", str(config)], stderr=subprocess.DEVNULL)
    http = urllib3.PoolManager(retries=False, timeout=30)
    try:
        origin.add("haproxy/front/1/original.jpg", photo())
        # Through the front: 503 until its checks of /health find the host up.
        wait_until(lambda: _status(http, port, "/health") == 200, what="the host checked in")
        statuses = [_status(http, port, f"/haproxy/front/1/w{w}.jpg") for w in range(100, 120)]
        assert statuses == [200] * 20  # the gone host checked out: never sent a request
    finally:
        http.clear()
        front.terminate()
        front.wait(timeout=30)


def _status(http: urllib3.PoolManager, port: int, path: str) -> int:
    try:
        return http.request("GET", f"http://127.0.0.1:{port}{path}").status
    except urllib3.exceptions.HTTPError:
        return 0
