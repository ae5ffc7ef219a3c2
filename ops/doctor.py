"""`image-server doctor`: what this host needs, checked in one run.

One line a check, `ok` or `FAIL`, then what was found: the config, each
RabbitMQ node, object storage, the source of the originals, the directories
the programs write, and the ports they listen on (free, or answered by
image-server's own /health). Exit status 1 when any check failed, so that a
deploy script can stop on it (as `imgproxy health` and thumbor's
`thumbor-doctor` are used).
"""

from __future__ import annotations

import dataclasses
import http.client
import os
import shutil
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pika
import pika.exceptions

from common import amqp, config, keys, program
from common.config import masked
from common.errors import ConfigError, ImageServerError
from common.settings import REPO_ROOT, Settings
from common.storage import open_store

TIMEOUT_S = 5.0


@dataclasses.dataclass(frozen=True)
class Finding:
    check: str
    ok: bool
    found: str

    def line(self) -> str:
        return f"{'ok' if self.ok else 'FAIL':<5} {self.check:<26} {self.found}"


def rabbitmq(settings: Settings) -> Iterator[Finding]:
    """Each node: a connection with the config's credentials and vhost."""
    for parameters in amqp.node_parameters(settings):
        where = f"rabbitmq {parameters.host}:{parameters.port}"
        parameters.socket_timeout = TIMEOUT_S
        try:
            connection = pika.BlockingConnection(parameters)
        except pika.exceptions.AMQPError as exc:
            why = str(exc) or type(exc).__name__
            url = masked("amqp_url", settings.amqp_url)
            yield Finding(where, False, f"cannot connect with {url}: {why}")
            continue
        try:
            channel = connection.channel()
            try:
                waiting = channel.queue_declare(amqp.RESIZE_QUEUE, passive=True).method
                queues = f"{amqp.RESIZE_QUEUE}: {waiting.message_count} jobs waiting"
            except pika.exceptions.ChannelClosedByBroker:
                queues = f"{amqp.RESIZE_QUEUE} not declared yet (the programs declare it)"
        finally:
            connection.close()
        yield Finding(where, True, f"connected to vhost {parameters.virtual_host!r}; {queues}")


def object_storage(settings: Settings) -> Finding:
    """A write and a read of the probe object the uploader writes too."""
    backend = settings.storage_backend
    if backend == "s3":
        where = f"{settings.s3_endpoint}/{settings.s3_bucket}"
    else:
        where = str(REPO_ROOT / settings.storage_path)
    try:
        store = open_store(settings)
        store.prepare()
        store.put(keys.probe_key(settings), b"", "text/plain")
        readable = store.exists(keys.probe_key(settings))
    except ImageServerError as exc:
        return Finding(f"storage {backend}", False, f"{where}: {exc.message}")
    if not readable:
        return Finding(f"storage {backend}", False, f"{where}: a written object cannot be read")
    return Finding(f"storage {backend}", True, f"{where}: written and read")


def source(settings: Settings) -> Finding:
    """The source of the originals answers HTTP (any status: the host is up)."""
    url = settings.source_domain
    try:
        status = _http_status(url, "/")
    except (OSError, http.client.HTTPException) as exc:
        return Finding("source", False, f"{url}: {exc}")
    return Finding("source", True, f"{url} answers HTTP ({status} for /)")


def directories(settings: Settings) -> Iterator[Finding]:
    """Each directory the programs write: writable, and its disk's free space."""
    for key, path in (
        ("local_base_path", settings.cache_dir),
        ("originals_path", settings.originals_dir),
        ("spill_path", settings.spill_dir),
    ):
        existing = next(parent for parent in (path, *path.parents) if parent.exists())
        if not existing.is_dir() or not os.access(existing, os.W_OK):
            yield Finding(f"disk {key}", False, f"{path}: {existing} is not a writable directory")
            continue
        usage = shutil.disk_usage(existing)
        state = "" if existing == path else " (made at start)"
        free = f"{usage.free / 2**30:.1f} GiB free of {usage.total / 2**30:.1f}"
        yield Finding(f"disk {key}", True, f"{path}{state}: {free}")


def ports(settings: Settings) -> Iterator[Finding]:
    """Each port: free, or answered by image-server's /health (already running)."""
    for key, address, port in (
        ("server_port", settings.bind_address, settings.server_port),
        ("status_port", settings.status_bind_address, settings.status_port),
        ("uploader_health_port", settings.status_bind_address, settings.uploader_health_port),
    ):
        host = "127.0.0.1" if address in ("0.0.0.0", "::") else address
        where = f"port {key}"
        try:
            with socket.create_connection((host, port), timeout=TIMEOUT_S):
                pass
        except OSError:
            yield Finding(where, True, f"{host}:{port} free")
            continue
        try:
            status = _http_status(f"http://{host}:{port}", "/health")
        except (OSError, http.client.HTTPException):
            status = 0
        if status == 200:
            yield Finding(where, True, f"{host}:{port} image-server answers /health")
        else:
            found = f"/health answers {status}" if status else "it does not answer HTTP"
            yield Finding(where, False, f"{host}:{port} in use, and {found}")


def _http_status(base: str, path: str) -> int:
    scheme, _, rest = base.partition("://")
    netloc = rest.split("/", 1)[0]
    kind = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
    connection = kind(netloc, timeout=TIMEOUT_S)
    try:
        connection.request("GET", path, headers={"User-Agent": "image-server doctor"})
        return connection.getresponse().status
    finally:
        connection.close()


def run(settings: Settings, shown: Callable[[Finding], None]) -> bool:
    """Every check, each shown as it ends; whether all passed. A check that
    fails in a way it did not foresee is a failed check, not a traceback."""
    checks: list[Callable[[Settings], Iterator[Finding] | Finding]] = [
        rabbitmq, object_storage, source, directories, ports,
    ]  # fmt: skip
    passed = True
    for check in checks:
        try:
            found = check(settings)
            findings = [found] if isinstance(found, Finding) else list(found)
        except Exception as exc:  # noqa: BLE001 - reported as the check's failure
            findings = [Finding(check.__name__, False, f"{type(exc).__name__}: {exc}")]
        for finding in findings:
            shown(finding)
            passed = passed and finding.ok
    return passed


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    parser = program.argument_parser(__doc__.splitlines()[0].split(": ", 1)[1], prog)
    args = parser.parse_args(argv)
    config_file = Path(args.config_dir) / f"{args.env}.json"
    try:
        settings = config.load(args.env, args.config_dir)
    except ConfigError as exc:
        print(Finding("config", False, f"{config_file}: {exc.message}").line())
        sys.exit(1)
    print(Finding("config", True, f"{args.env} ({config_file})").line())
    if not run(settings, lambda finding: print(finding.line(), flush=True)):
        sys.exit(1)
