"""`image-server doctor`: every check on real parts (the local RabbitMQ, an HTTP
origin, directories and ports of this machine), passing and failing."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from ops.doctor import Finding, run
from tests.support.origin import Origin
from tests.support.ports import free_port
from tests.support.rabbitmq import Vhost
from tests.support.settings import configured, host_keys

pytestmark = pytest.mark.stack  # RabbitMQ

CHECKS = {
    "rabbitmq 127.0.0.1:5672",
    "storage filesystem",
    "source",
    "disk local_base_path",
    "disk originals_path",
    "disk spill_path",
    "port server_port",
    "port status_port",
    "port uploader_health_port",
}


def test_a_host_with_what_it_needs_passes_every_check(
    vhost: Vhost, origin: Origin, tmp_path: Path
) -> None:
    settings = configured(**host_keys(tmp_path, origin.url("")), amqp_url=vhost.amqp_url)
    findings: list[Finding] = []
    assert run(settings, findings.append), [f.line() for f in findings]
    assert {finding.check for finding in findings} == CHECKS


def test_each_failure_is_a_line_naming_what_failed(origin: Origin, tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    squatter = socket.socket()  # something that is not image-server, on server_port
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    keys = host_keys(tmp_path, f"http://127.0.0.1:{free_port()}/")  # nobody listens there
    keys["local_base_path"] = str(tmp_path / "a-file" / "cache")
    keys["server_port"] = squatter.getsockname()[1]
    broker_port = free_port()  # nobody listens there either
    settings = configured(**keys, amqp_url=f"amqp://guest:secret@127.0.0.1:{broker_port}/v")
    findings: list[Finding] = []
    try:
        assert not run(settings, findings.append)
    finally:
        squatter.close()
    failed = {finding.check for finding in findings if not finding.ok}
    expected = {f"rabbitmq 127.0.0.1:{broker_port}", "source", "disk local_base_path"}
    assert failed == expected | {"port server_port"}, [f.line() for f in findings]
    assert not any("secret" in finding.line() for finding in findings)
