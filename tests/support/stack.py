"""The programs, started as the same subprocesses supervisord runs, on a vhost of their own."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import urllib3

from common import config, keys, metrics
from tests.support import REPO
from tests.support.origin import Origin
from tests.support.rabbitmq import Vhost
from tests.support.settings import base_config, host_keys
from tests.support.waiting import wait_until

STARTUP_S = 60.0  # a program's start, at most (Stack._started)


class Stack:
    """Frontends and processors of one config, started as real subprocesses."""

    def __init__(
        self, workdir: Path, vhost: Vhost, origin: Origin, frontends: int = 1, **overrides: Any
    ) -> None:
        self.workdir = workdir
        self.vhost = vhost
        self.origin = origin
        self.config = {
            **base_config(),
            **host_keys(workdir, origin.url("")),
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
        return lambda: self._started(process, f"{name} up")

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
        return lambda: self._started(process, f"{name} consuming")

    def start_uploader(self) -> None:
        self._spawn_uploader()()

    def _spawn_uploader(self) -> Callable[[], None]:
        process = self.spawn("uploader", "uploader")
        return lambda: self._started(process, "uploader consuming")

    def _started(self, process: subprocess.Popen[bytes], what: str) -> None:
        """Wait for `process` to serve; its exit ends the wait at once. The bound is wide:
        on two loaded workers (container images building beside them) an uploader once
        took more than 15 s to start."""

        def serving() -> bool:
            assert process.poll() is None, f"{what}: exited with {process.returncode}"
            return self.serving(process)

        wait_until(serving, timeout_s=STARTUP_S, what=what)

    def start_status(self) -> None:
        self._spawn_status()()

    def start(self, processors: int = 2, uploader: bool = False, status: bool = False) -> Stack:
        """Every program started at once (each declares the queues it uses), then
        each waited for; the status server last, as an observer of them all."""
        ready = [self._spawn_uploader()] if uploader else []
        ready += [self._spawn_processor(index) for index in range(processors)]
        ready += [self._spawn_frontend(index) for index in range(self._frontends)]
        for wait in ready:
            wait()
        if status:
            self.start_status()
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
