"""The programs under test, each started for real on loopback, and their memory."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import minio

from common import config as settings_config
from common import metrics

REPO = Path(__file__).resolve().parent.parent
ORIGIN_PORT = 7400
OURS_PORT = 7200
THUMBOR_PORT = 7300
S3_PORT = 7500  # SeaweedFS' S3 gateway; its master, volume and filer take the next three
S3_ACCESS_KEY = "bench"
S3_SECRET_KEY = "bench-secret"
JPEG_QUALITY = 85


def wait_for_port(port: int, timeout_s: float = 60) -> None:
    give_up = time.monotonic() + timeout_s
    while time.monotonic() < give_up:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port}")


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            found.append(int(entry.name))
    return found


def process_tree(pid: int) -> list[int]:
    tree = [pid]
    for child in _children(pid):
        tree.extend(process_tree(child))
    return tree


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_s(pids: list[int]) -> float:
    """CPU seconds (user and system) the processes `pids` have used so far."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        total += int(fields[11]) + int(fields[12])
    return total / tick


def _busy_jiffies() -> int:
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    idle = int(fields[3]) + int(fields[4])  # idle + iowait
    return sum(int(f) for f in fields[:8]) - idle


def wait_until_idle(timeout_s: float = 60.0, busy_share: float = 0.1) -> None:
    """Wait until the machine is nearly idle: whatever one side left running (a
    backlog of uploads, jobs still in a queue) must not slow the other side's run."""
    give_up = time.monotonic() + timeout_s
    cores = os.cpu_count() or 1
    tick = os.sysconf("SC_CLK_TCK")
    while time.monotonic() < give_up:
        before = _busy_jiffies()
        time.sleep(0.5)
        if (_busy_jiffies() - before) / tick / 0.5 / cores < busy_share:
            return


def pids_named(command: str) -> list[int]:
    """Every process whose command name (comm) is `command`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == command:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def broker_pids() -> list[int]:
    """RabbitMQ's Erlang VM (beam.smp), which ours needs and thumbor does not."""
    return pids_named("beam.smp")


def busy_s() -> float:
    """CPU seconds the whole machine has been busy (all cores, idle and iowait excluded)."""
    return _busy_jiffies() / os.sysconf("SC_CLK_TCK")


class PeakRss:
    """Samples the summed RSS of a set of processes; keeps the peak."""

    def __init__(self, pids: Callable[[], list[int]]) -> None:
        self._pids = pids
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kib = max(self.peak_kib, sum(rss_kib(pid) for pid in self._pids()))
            self._stop.wait(0.1)


class Nginx:
    def __init__(self, work: Path) -> None:
        self.work = work / "nginx"
        self.docroot = self.work / "docroot"
        self.docroot.mkdir(parents=True, exist_ok=True)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        conf = self.work / "nginx.conf"
        conf.write_text(
            f"""
worker_processes 1;
daemon off;
pid {self.work}/nginx.pid;
error_log {self.work}/error.log;
events {{ worker_connections 4096; }}
http {{
    access_log {self.work}/access.log;
    client_body_temp_path {self.work}/tmp;
    proxy_temp_path {self.work}/tmp;
    fastcgi_temp_path {self.work}/tmp;
    uwsgi_temp_path {self.work}/tmp;
    scgi_temp_path {self.work}/tmp;
    sendfile on;
    keepalive_requests 100000;
    types {{ image/jpeg jpg; image/png png; image/webp webp; }}
    server {{ listen 127.0.0.1:{ORIGIN_PORT}; root {self.docroot}; }}
}}
"""
        )
        (self.work / "tmp").mkdir(exist_ok=True)
        self.process = subprocess.Popen(["nginx", "-c", str(conf)])
        wait_for_port(ORIGIN_PORT)

    def pids(self) -> list[int]:
        return process_tree(self.process.pid) if self.process is not None else []

    def hits(self, path_part: str) -> int:
        log = self.work / "access.log"
        return (
            sum(path_part in line for line in log.read_text().splitlines()) if log.exists() else 0
        )

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(15)


class SeaweedS3:
    """SeaweedFS (master, volume, filer, S3 gateway in one process) on loopback,
    started by the project's own launcher (ops/seaweedfs.py): the production-like
    row's object storage, one bucket for each side."""

    def __init__(self, work: Path) -> None:
        self.work = work / "seaweedfs"
        self.endpoint = f"127.0.0.1:{S3_PORT}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        from ops import seaweedfs

        if self.work.exists():
            shutil.rmtree(self.work)
        self.work.mkdir(parents=True)
        ports = {"master": S3_PORT + 1, "volume": S3_PORT + 2, "filer": S3_PORT + 3}
        settings = settings_config.from_mapping(
            {
                **self.ours_config("images"),
                # What it needs of the settings: the S3 identity, its directory and ports.
                "local_base_path": str(self.work / "unused"),
                "originals_path": str(self.work / "unused-originals"),
                "source_domain": f"http://127.0.0.1:{ORIGIN_PORT}/",
                "seaweedfs_dir": str(self.work),
                "seaweedfs_ports": ports,
            }
        )
        log = open(self.work / "seaweedfs.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(seaweedfs.command(settings), stdout=log, stderr=log)
        client = self.client()
        give_up = time.monotonic() + 90
        while True:  # its first object waits for the master to grow volumes: done here
            try:
                for bucket in ("ours", "thumbor", "warm-up"):
                    if not client.bucket_exists(bucket):
                        client.make_bucket(bucket)
                client.put_object("warm-up", "ready", io.BytesIO(b"ready"), 5)
                return
            except Exception as exc:
                if time.monotonic() > give_up or self.process.poll() is not None:
                    where = self.work / "seaweedfs.log"
                    raise RuntimeError(f"SeaweedFS did not start: {where}") from exc
                time.sleep(0.5)

    def ours_config(self, bucket: str) -> dict[str, object]:
        return {
            "storage_backend": "s3",
            "s3_endpoint": self.endpoint,
            "s3_bucket": bucket,
            "s3_access_key": S3_ACCESS_KEY,
            "s3_secret_key": S3_SECRET_KEY,
            "s3_secure": False,
        }

    def client(self) -> minio.Minio:
        return minio.Minio(self.endpoint, S3_ACCESS_KEY, S3_SECRET_KEY, secure=False)

    def objects(self, bucket: str) -> int:
        return sum(1 for _ in self.client().list_objects(bucket, recursive=True))

    def pids(self) -> list[int]:
        return process_tree(self.process.pid) if self.process is not None else []

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(15)


class Ours:
    """This project under its own supervisord, uploader on: a filesystem store, or
    the object storage `overrides` name."""

    def __init__(self, work: Path, processes: int, **overrides: object) -> None:
        self.work = work / "ours"
        self.processes = processes
        self.overrides = overrides
        self.supervisord: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if self.work.exists():
            shutil.rmtree(self.work)
        (self.work / "log").mkdir(parents=True)
        production = json.loads((REPO / "config" / "production.json").read_text())
        # Its settings with defaults filled in (its object storage is not used here).
        shipped_defaults = settings_config.load(
            "production", environ={"IMAGE_SERVER_STORAGE_BACKEND": "filesystem"}
        )
        config = {
            **production,
            "server_port": OURS_PORT,
            "status_port": OURS_PORT + 1,
            "bind_address": "127.0.0.1",
            "source_domain": f"http://127.0.0.1:{ORIGIN_PORT}/",
            "allowed_private_networks": ["127.0.0.1/32"],
            "local_base_path": str(self.work / "cache"),
            "originals_path": str(self.work / "originals"),
            "storage_backend": "filesystem",
            "storage_path": str(self.work / "storage"),
            "spill_path": str(self.work / "spill"),
            "metrics_path": str(self.work / "metrics"),
            "access_log_path": str(self.work / "log"),
            "graphite_enabled": False,
            "default_quality": {**shipped_defaults.default_quality, "jpg": JPEG_QUALITY},
            "maximum_width": 1000,
            "amqp_url": "amqp://guest:guest@127.0.0.1:5672/bench",
            # The load comes from one address and asks any size: no output list, no budget.
            "allowed_outputs": [],
            "allow_any_output": True,
            "client_miss_rate_per_s": 0,
            **self.overrides,
        }
        (self.work / "bench.json").write_text(json.dumps(config, indent=2))
        python = sys.executable
        programs = []
        for name, count in (("frontend", self.processes), ("processor", self.processes)):
            programs.append(
                f"""
[program:{name}]
command={python} -m {name} --config-dir {self.work} -e bench --process-num %(process_num)d
process_name=%(program_name)s_%(process_num)d
numprocs={count}
directory={REPO}
stopsignal=TERM
redirect_stderr=true
stdout_logfile={self.work}/log/%(program_name)s_%(process_num)d.log
"""
            )
        programs.append(
            f"""
[program:uploader]
command={python} -m uploader --config-dir {self.work} -e bench
directory={REPO}
redirect_stderr=true
stdout_logfile={self.work}/log/uploader.log
"""
        )
        (self.work / "supervisord.conf").write_text(
            f"""
[unix_http_server]
file={self.work}/supervisor.sock
[supervisord]
logfile={self.work}/log/supervisord.log
pidfile={self.work}/supervisord.pid
environment=MALLOC_ARENA_MAX="2"
[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
[supervisorctl]
serverurl=unix://{self.work}/supervisor.sock
"""
            + "".join(programs)
        )
        # A vhost of its own, new each run: no queue of an earlier run interferes.
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", "bench"], capture_output=True)
        for command in (
            ["add_vhost", "bench"],
            ["set_permissions", "-p", "bench", "guest", ".*", ".*", ".*"],
        ):
            subprocess.run(["rabbitmqctl", "-q", *command], check=True, capture_output=True)
        supervisord = Path(python).parent / "supervisord"
        self.supervisord = subprocess.Popen(
            [str(supervisord), "-n", "-c", str(self.work / "supervisord.conf")]
        )
        wait_for_port(OURS_PORT)
        serving = 2 * self.processes + 1  # frontends, processors, the uploader
        give_up = time.monotonic() + 60
        while len(metrics.serving_pids(self.work / "metrics")) < serving:
            if time.monotonic() > give_up:
                raise RuntimeError("our programs did not all start serving")
            time.sleep(0.2)

    def pids(self) -> list[int]:
        if self.supervisord is None:
            return []
        return process_tree(self.supervisord.pid)[1:]  # the programs, not supervisord

    def program_pids(self, program: str) -> list[int]:
        """The processes of one of our programs (frontend, processor, uploader)."""
        found = []
        for pid in self.pids():
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue  # gone meanwhile
            if program.encode() in command:
                found.append(pid)
        return found

    def resize_busy_s(self) -> float:
        """Seconds the processors' resize threads have spent resizing (their figures)."""
        return metrics.counter_total(
            self.work / "metrics", "image_server_resize_duration_seconds_sum"
        )

    def resizes_done(self) -> int:
        """Resize jobs the processors have done (their Prometheus figures)."""
        return int(metrics.counter_total(self.work / "metrics", "image_server_jobs_total"))

    def path(self, image: str, width: int, quality: int = JPEG_QUALITY) -> str:
        suffix = "" if quality == JPEG_QUALITY else f"-q{quality}"
        return f"/bench/img/{image}/w{width}{suffix}.jpg"

    def stop(self) -> None:
        if self.supervisord is not None:
            self.supervisord.terminate()
            self.supervisord.wait(60)


class Thumbor:
    """thumbor from PyPI in its own venv: Pillow engine, HTTP loader, file storage
    and result storage; or, given `s3`, thumbor-aws' storage and result storage."""

    def __init__(self, work: Path, venv: Path, processes: int, s3: SeaweedS3 | None = None) -> None:
        self.work = work / "thumbor"
        self.venv = venv
        self.processes = processes
        self.s3 = s3
        self.process: subprocess.Popen[bytes] | None = None

    def storage_conf(self) -> str:
        if self.s3 is None:
            return f"""
STORAGE = 'thumbor.storages.file_storage'
FILE_STORAGE_ROOT_PATH = '{self.work}/storage'
RESULT_STORAGE = 'thumbor.result_storages.file_storage'
RESULT_STORAGE_FILE_STORAGE_ROOT_PATH = '{self.work}/result'
"""
        lines = [
            "STORAGE = 'thumbor_aws.storage'",
            "RESULT_STORAGE = 'thumbor_aws.result_storage'",
            # Not its "image ids" lookup: SeaweedFS answers for a directory (a URL's first
            # 32 characters, ".../Autumn/") where S3 would say there is no such key.
            "MAX_ID_LENGTH = 0",
        ]
        for part, root in (("STORAGE", "/originals"), ("RESULT_STORAGE", "/results")):
            lines += [
                f"AWS_{part}_REGION_NAME = 'us-east-1'",
                f"AWS_{part}_BUCKET_NAME = 'thumbor'",
                f"AWS_{part}_S3_ENDPOINT_URL = 'http://{self.s3.endpoint}'",
                f"AWS_{part}_S3_ACCESS_KEY_ID = '{S3_ACCESS_KEY}'",
                f"AWS_{part}_S3_SECRET_ACCESS_KEY = '{S3_SECRET_KEY}'",
                f"AWS_{part}_ROOT_PATH = '{root}'",
            ]
        return "\n".join(lines) + "\n"

    def start(self) -> None:
        if self.work.exists():
            shutil.rmtree(self.work)
        self.work.mkdir(parents=True)
        conf = self.work / "thumbor.conf"
        conf.write_text(
            f"""
LOADER = 'thumbor.loaders.http_loader'
ENGINE = 'thumbor.engines.pil'
{self.storage_conf()}
RESULT_STORAGE_STORES_UNSAFE = True
ALLOW_UNSAFE_URL = True
QUALITY = {JPEG_QUALITY}
PROGRESSIVE_JPEG = False
AUTO_WEBP = False
MAX_AGE = 31536000
"""
        )
        log = open(self.work / "thumbor.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                str(self.venv / "bin" / "thumbor"),
                "-c",
                str(conf),
                "-i",
                "127.0.0.1",
                "-p",
                str(THUMBOR_PORT),
                "--processes",
                str(self.processes),
                "-l",
                "error",
            ],
            stdout=log,
            stderr=log,
            # botocore >= 1.36 sends bodies aws-chunked with a trailing checksum by
            # default, which SeaweedFS stores as they came (framing and all).
            env={
                **os.environ,
                "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required",
                "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required",
            },
        )
        wait_for_port(THUMBOR_PORT)
        time.sleep(1.0)  # the forked workers

    def pids(self) -> list[int]:
        return process_tree(self.process.pid) if self.process is not None else []

    def path(self, image: str, width: int, quality: int = JPEG_QUALITY) -> str:
        source = f"127.0.0.1:{ORIGIN_PORT}/bench/img/{image}/original.jpg"
        return f"/unsafe/{width}x0/filters:format(jpeg):quality({quality})/{source}"

    def stop(self) -> None:
        if self.process is not None:
            for pid in reversed(self.pids()):
                try:
                    os.kill(pid, 15)
                except ProcessLookupError:
                    pass
            self.process.wait(30)
