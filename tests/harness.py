"""Real parts for the tests: a RabbitMQ vhost, an HTTP origin, the programs.

Nothing here is a mock: the origin is a Tornado app on a loopback port, the
broker is the local RabbitMQ (one vhost per stack, deleted afterwards), and
the frontend and processors run as the same subprocesses supervisord runs.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import minio
import pika
import tornado.http1connection
import tornado.httpserver
import tornado.iostream
import tornado.netutil
import tornado.web
import urllib3

from common import config, keys, metrics
from common.settings import Settings

REPO = Path(__file__).resolve().parent.parent
MANAGEMENT = "http://127.0.0.1:15672/api"
_http = urllib3.PoolManager(headers=urllib3.make_headers(basic_auth="guest:guest"))


def _free_port_below(limit: int) -> int:
    """A free port whose gRPC twin (port + 10000, SeaweedFS' rule) is in range and free too
    (a twin in use made SeaweedFS exit at start: "bind: address already in use")."""
    while True:
        port = free_port()
        if port < limit and _is_free(port + 10_000):
            return port


def _is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A free port of loopback, never one handed out before in this process: two
    picks in a row may get the same port from the kernel (the storage cluster's
    gateway once could not bind for it)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def wait_until(condition: Any, timeout_s: float = 15.0, what: str = "condition") -> None:
    give_up = time.monotonic() + timeout_s
    while time.monotonic() < give_up:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# --- RabbitMQ ---------------------------------------------------------------------


def management(method: str, path: str, body: Any = None) -> Any:
    response = _http.request(
        method,
        f"{MANAGEMENT}{path}",
        body=json.dumps(body) if body is not None else None,
        headers={**_http.headers, "content-type": "application/json"},
    )
    assert response.status < 300, f"{method} {path}: {response.status} {response.data!r}"
    return json.loads(response.data) if response.data else None


class Vhost:
    """A fresh RabbitMQ vhost, so that stacks never see each other's queues."""

    def __init__(self) -> None:
        self.name = f"test-{uuid.uuid4().hex[:12]}"
        quoted = urllib.parse.quote(self.name, safe="")
        self._path = f"/vhosts/{quoted}"
        management("PUT", self._path, {})
        management(
            "PUT", f"/permissions/{quoted}/guest", {"configure": ".*", "write": ".*", "read": ".*"}
        )
        self.amqp_url = f"amqp://guest:guest@127.0.0.1:5672/{quoted}"

    def connect(self) -> pika.BlockingConnection:
        return pika.BlockingConnection(pika.URLParameters(self.amqp_url))

    def message_count(self, queue: str) -> int:
        """Messages ready in `queue`, asked of the broker itself (no stats delay)."""
        connection = self.connect()
        try:
            declared = connection.channel().queue_declare(queue, passive=True)
            return int(declared.method.message_count)
        finally:
            connection.close()

    def delete(self) -> None:
        management("DELETE", self._path)


def object_key_of(settings: Settings, cache_key: str) -> str:
    """The object key of the output whose cache key is `cache_key`."""
    return keys.OutputRef.from_cache_key(cache_key).object_key(settings)


def original_key_of(settings: Settings, cache_key: str, source_url: str) -> str:
    """Where the original of the output `cache_key` (fetched from `source_url`) is kept."""
    return keys.OutputRef.from_cache_key(cache_key).image.original_key(settings, source_url)


def settings_on(amqp_url: str, **keys: Any) -> Settings:
    """The settings of a program on `amqp_url`: RabbitMQ's keys, defaults for the rest."""
    return config.from_mapping({
        "source_domain": "http://127.0.0.1/", "local_base_path": "unused/cache",
        "originals_path": "unused/originals", "amqp_url": amqp_url, **keys,
    })  # fmt: skip


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=120)


# --- the origin -------------------------------------------------------------------


@dataclasses.dataclass
class Route:
    body: bytes
    status: int = 200
    content_type: str = "image/jpeg"
    delay_first_s: float = 0.0  # the first request waits this long, later ones do not
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    # Headers (with the full Content-Length) at once, then one byte per interval.
    trickle_interval_s: float = 0.0
    # HTTP/1.0 style: no Content-Length, the body ends when the connection closes.
    close_delimited: bool = False


class _OriginHandler(tornado.web.RequestHandler):
    def initialize(self, origin: Origin) -> None:
        self.origin = origin

    async def get(self, path: str) -> None:
        self.origin.hits[path] += 1
        route = self.origin.routes.get(path)
        if route is None:
            self.set_status(404)
            self.finish("no such original")
            return
        if route.delay_first_s and self.origin.hits[path] == 1:
            self.origin.started[path].set()
            await asyncio.sleep(route.delay_first_s)
        if route.close_delimited:
            await self._close_delimited(route)
            return
        if route.trickle_interval_s:
            await self._trickle(path, route)
            return
        self.set_status(route.status)
        self.set_header("Content-Type", route.content_type)
        for name, value in route.headers.items():
            self.set_header(name, value)
        self.finish(route.body)

    async def _close_delimited(self, route: Route) -> None:
        connection = self.request.connection
        assert isinstance(connection, tornado.http1connection.HTTP1Connection)
        stream = connection.detach()
        head = f"HTTP/1.1 {route.status} OK\r\nContent-Type: {route.content_type}\r\n"
        await stream.write(head.encode() + b"Connection: close\r\n\r\n" + route.body)
        stream.close()

    async def _trickle(self, path: str, route: Route) -> None:
        self.set_status(route.status)
        self.set_header("Content-Type", route.content_type)
        self.set_header("Content-Length", str(len(route.body)))
        self.origin.started[path].set()
        connection = self.request.connection
        assert isinstance(connection, tornado.http1connection.HTTP1Connection)
        for index in range(len(route.body)):
            if connection.stream.closed():
                return
            self.write(route.body[index : index + 1])
            try:
                await self.flush()
            except tornado.iostream.StreamClosedError:
                return
            await asyncio.sleep(route.trickle_interval_s)
        self.finish()


class Origin:
    """A real HTTP origin on a loopback port, in a thread of the test process."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.hits: collections.Counter[str] = collections.Counter()
        self.started: collections.defaultdict[str, threading.Event] = collections.defaultdict(
            threading.Event
        )
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def add(self, path: str, body: bytes, **kwargs: Any) -> str:
        """Serve `body` at `path` (no leading slash); returns its URL."""
        self.routes[path] = Route(body, **kwargs)
        return self.url(path)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
        self.port = sockets[0].getsockname()[1]
        app = tornado.web.Application([(r"/(.*)", _OriginHandler, {"origin": self})])
        server = tornado.httpserver.HTTPServer(app)
        server.add_sockets(sockets)
        self._ready.set()
        self._loop.run_forever()
        server.stop()
        self._loop.run_until_complete(server.close_all_connections())
        self._loop.close()

    def stop(self) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


# --- the programs -----------------------------------------------------------------


class Stack:
    """Frontends and processors of one config, started as real subprocesses."""

    def __init__(
        self, workdir: Path, vhost: Vhost, origin: Origin, frontends: int = 1, **overrides: Any
    ) -> None:
        self.workdir = workdir
        self.vhost = vhost
        self.origin = origin
        base = json.loads((REPO / "config" / "test.json").read_text())
        self.config = {
            **base,
            "server_port": free_port(),
            "status_port": free_port(),
            "uploader_health_port": free_port(),
            "source_domain": origin.url(""),
            "local_base_path": str(workdir / "cache"),
            "originals_path": str(workdir / "originals"),
            "storage_path": str(workdir / "storage"),
            "spill_path": str(workdir / "spill"),
            "metrics_path": str(workdir / "metrics"),
            "access_log_path": str(workdir),
            "amqp_url": vhost.amqp_url,
            **overrides,
        }
        (workdir / "config").mkdir(parents=True, exist_ok=True)
        (workdir / "config" / "test.json").write_text(json.dumps(self.config))
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._frontends = frontends
        self.http = urllib3.PoolManager(maxsize=64, retries=False, timeout=30)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.config['server_port']}"

    def get(self, path: str, method: str = "GET", **kwargs: Any) -> urllib3.BaseHTTPResponse:
        return self.http.request(method, self.base_url + path, **kwargs)

    def log_path(self, name: str) -> Path:
        return self.workdir / f"{name}.log"

    def spawn(self, name: str, program: str, process_num: int = 0) -> subprocess.Popen[bytes]:
        log = open(self.log_path(name), "ab")  # noqa: SIM115 - lives as long as the process
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                program,
                "--config-dir",
                str(self.workdir / "config"),
                "-e",
                "test",
                "--process-num",
                str(process_num),
            ],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        log.close()
        self.processes[name] = process
        return process

    @property
    def settings(self) -> Any:
        """The stack's config as the programs load it (common.settings.Settings)."""
        from common import config

        return config.from_mapping(self.config)

    def cached(self, cache_key: str) -> Path:
        """Where the stack's disk cache keeps the output `cache_key` (common/keys.py)."""
        return keys.OutputRef.from_cache_key(cache_key).path_under(self.workdir / "cache")

    def cached_outputs(self, image_path: str) -> list[Path]:
        """The files of the disk cache's outputs of the image `<model>/<imageType>/<id>`."""
        model, image_type, image_id = image_path.split("/")
        image = keys.ImageRef(model, image_type, image_id)
        return image.cached_outputs_under(self.workdir / "cache")

    def stored_path(self, key: str) -> Path:
        """Where the filesystem backend keeps the object `key`."""
        return Path(self.config["storage_path"]) / key

    @property
    def status_url(self) -> str:
        return f"http://127.0.0.1:{self.config['status_port']}"

    def serving(self, process: subprocess.Popen[bytes]) -> bool:
        """Whether `process` says it serves: its image_server_process_serving figure
        (a frontend listening, a processor or the uploader consuming)."""
        return process.pid in metrics.serving_pids(self.workdir / "metrics")

    def start_frontend(self, index: int) -> None:
        self._spawn_frontend(index)()

    def _spawn_frontend(self, index: int) -> Callable[[], None]:
        name = f"frontend_{index}"
        process = self.spawn(name, "frontend", index)
        # It listens once it can publish resize jobs (or after 10 s without RabbitMQ).
        return lambda: wait_until(lambda: self.serving(process), what=f"{name} up")

    def _spawn_status(self) -> Callable[[], None]:
        self.spawn("status", "ops.status.server")
        return lambda: wait_until(
            lambda: self._status_of(f"{self.status_url}/health") in (200, 503),
            what="the status server answering",
        )

    def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        """The status server's /metrics, parsed by prometheus-client's own parser:
        (sample name, its labels) -> value."""
        from prometheus_client.parser import text_string_to_metric_families

        text = self.http.request("GET", f"{self.status_url}/metrics").data.decode()
        return {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def status_json(self) -> dict[str, Any]:
        """The status server's /status.json, after a fresh sample of the host."""
        sampled = self.http.request("GET", f"{self.status_url}/status.json")
        before = json.loads(sampled.data)["sampled_epoch_s"]
        wait_until(
            lambda: (
                json.loads(self.http.request("GET", f"{self.status_url}/status.json").data)[
                    "sampled_epoch_s"
                ]
                > before
            ),
            what="a new sample",
        )
        body: dict[str, Any] = json.loads(
            self.http.request("GET", f"{self.status_url}/status.json").data
        )
        return body

    def start_processor(self, index: int) -> None:
        self._spawn_processor(index)()

    def _spawn_processor(self, index: int) -> Callable[[], None]:
        name = f"processor_{index}"
        process = self.spawn(name, "processor", index)
        return lambda: wait_until(lambda: self.serving(process), what=f"{name} consuming")

    def start_uploader(self) -> None:
        self._spawn_uploader()()

    def _spawn_uploader(self) -> Callable[[], None]:
        process = self.spawn("uploader", "uploader")
        return lambda: wait_until(lambda: self.serving(process), what="uploader consuming")

    def start_status(self) -> None:
        self._spawn_status()()

    def start(self, processors: int = 2, uploader: bool = False, status: bool = False) -> Stack:
        """Every program started at once (each declares the queues it uses), then
        each waited for."""
        ready = [self._spawn_uploader()] if uploader else []
        ready += [self._spawn_processor(index) for index in range(processors)]
        ready += [self._spawn_frontend(index) for index in range(self._frontends)]
        if status:
            ready.append(self._spawn_status())
        for wait in ready:
            wait()
        return self

    def _status_of(self, url: str) -> int:
        try:
            return self.http.request("GET", url, timeout=1).status
        except urllib3.exceptions.HTTPError:
            return 0

    def access_log(self, index: int) -> str:
        """The request lines of frontend `index` (written every half second)."""
        path = self.workdir / f"access_frontend_{index}.log"
        return path.read_text() if path.exists() else ""

    def log(self, name: str) -> str:
        path = self.log_path(name)
        return path.read_text() if path.exists() else ""

    def resizes(self, cache_key: str) -> int:
        """How many times the processors made `cache_key` (all of them, or those whose
        key starts with it when it ends with "/")."""
        return sum(
            self.outputs_made(name, cache_key)
            for name in self.processes
            if name.startswith("processor")
        )

    def outputs_made(self, processor: str, cache_key: str) -> int:
        """Outputs `processor` made of `cache_key` (a prefix when it ends with "/"), from
        the structured fields of its job lines (event "job", outcome "ok"), not from
        the wording of their message."""
        made = 0
        for line in self.log(processor).splitlines():
            if cache_key not in line:
                continue
            try:
                fields = json.loads(line)
            except ValueError:
                continue  # not a log line (a crash's output)
            key = str(fields.get("cache_key", ""))
            wanted = key.startswith(cache_key) if cache_key.endswith("/") else key == cache_key
            made += fields.get("event") == "job" and fields.get("outcome") == "ok" and wanted
        return made

    def frontends_that_answered(self, path_part: str) -> set[int]:
        """The frontends (their numbers) whose request lines name `path_part`."""
        return {index for index in range(self._frontends) if path_part in self.access_log(index)}

    def kill(self, name: str, signum: int = signal.SIGKILL) -> None:
        process = self.processes[name]
        process.send_signal(signum)
        process.wait(30)

    def alive(self) -> dict[str, bool]:
        return {name: process.poll() is None for name, process in self.processes.items()}

    def stop(self) -> None:
        # The test's connections go first: a frontend that stops gives idle
        # clients a grace period (frontend/__main__.py, drain).
        self.http.clear()
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# --- an S3-compatible server ------------------------------------------------------


class S3Server:
    """SeaweedFS' S3 gateway on loopback ports, started by the project's own
    launcher (ops/seaweedfs.py); `start()` after `stop()` is a fresh, empty server."""

    ACCESS_KEY = "testing"
    SECRET_KEY = "testing-secret"

    def __init__(self, workdir: Path) -> None:
        self.port = _free_port_below(55_000)
        self._workdir = workdir
        self._log = workdir / "seaweedfs.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def config(self, bucket: str = "images") -> dict[str, Any]:
        """Config keys that point the s3 backend at this server."""
        return {
            "storage_backend": "s3",
            "s3_endpoint": self.endpoint,
            "s3_bucket": bucket,
            "s3_access_key": self.ACCESS_KEY,
            "s3_secret_key": self.SECRET_KEY,
            "s3_secure": False,
        }

    def start(self) -> None:
        from common import config
        from ops import seaweedfs

        data = self._workdir / "seaweedfs"
        shutil.rmtree(data, ignore_errors=True)
        ports = {part: _free_port_below(55_000) for part in ("master", "volume", "filer")}
        settings = config.from_mapping(
            {
                "source_domain": "http://127.0.0.1/",
                "local_base_path": "unused/cache",
                "originals_path": "unused/originals",
                **self.config(),
                "seaweedfs_dir": str(data),
                "seaweedfs_ports": ports,
            }
        )
        log = open(self._log, "ab")  # noqa: SIM115 - lives as long as the process
        self._process = subprocess.Popen(seaweedfs.command(settings), stdout=log, stderr=log)
        log.close()
        wait_until(self._answers, timeout_s=60, what="SeaweedFS' S3 gateway answering")

    def _answers(self) -> bool:
        """True once the gateway stores an object. It listens before its filer is
        ready, and the first object ever stored waits ~5 s for the master to grow
        volumes: done here, so that no test's first put runs into its timeout."""
        client = minio.Minio(
            self.endpoint, self.ACCESS_KEY, self.SECRET_KEY, secure=False, region="us-east-1",
            http_client=urllib3.PoolManager(retries=False, timeout=15.0),
        )  # fmt: skip
        try:
            if not client.bucket_exists("harness-warm-up"):
                client.make_bucket("harness-warm-up")
            client.put_object("harness-warm-up", "ready", io.BytesIO(b"ready"), 5)
        except (minio.error.MinioException, urllib3.exceptions.HTTPError, OSError):
            return False
        return True

    def _listening(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            # SeaweedFS takes ~25 s to stop gracefully; the tests want it gone, as a crash.
            self._process.kill()
            self._process.wait(15)
        wait_until(lambda: not self._listening(), what="SeaweedFS stopped")


class S3View:
    """A test's share of the session's SeaweedFS (starting one costs ~3.5 s): in
    the shared bucket `images`, keys under a prefix of its own; any other bucket
    its own (the name given the test's suffix). SeaweedFS gives each bucket 7
    volumes and holds about 70 here: buckets are not made per test. A test that
    stops the server has one of its own (`own_s3`)."""

    ACCESS_KEY = S3Server.ACCESS_KEY
    SECRET_KEY = S3Server.SECRET_KEY

    def __init__(self, server: S3Server) -> None:
        self._server = server
        self._suffix = uuid.uuid4().hex[:10]

    @property
    def endpoint(self) -> str:
        return self._server.endpoint

    def bucket(self, name: str = "images") -> str:
        return name if name == "images" else f"{name}-{self._suffix}"

    def config(self, bucket: str = "images") -> dict[str, Any]:
        prefix = f"public/images/test-{self._suffix}"
        return {**self._server.config(self.bucket(bucket)), "storage_key_prefix": prefix}


def storage_config(backend: str, s3: S3Server | S3View | None, directory: Path) -> dict[str, Any]:
    """Config keys of one storage backend: the S3 server's, or a directory."""
    if backend == "s3":
        assert s3 is not None
        return s3.config()
    return {"storage_backend": "filesystem", "storage_path": str(directory)}
