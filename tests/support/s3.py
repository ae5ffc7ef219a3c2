"""An S3-compatible server (SeaweedFS, by the project's own launcher) and a test's share of it."""

from __future__ import annotations

import io
import shutil
import socket
import subprocess
import uuid
from pathlib import Path
from typing import Any

import minio
import urllib3

from tests.support.ports import free_port_below
from tests.support.settings import configured
from tests.support.waiting import wait_until

ACCESS_KEY = "testing"
SECRET_KEY = "testing-secret"
# The tests' own S3 clients share these connections: a client's pool dropped
# with its server stopped would close its sockets only when collected, in
# whichever test runs then (an unclosed socket there is an error of that test).
_HTTP = urllib3.PoolManager(retries=False, timeout=15.0)


def s3_client(
    endpoint: str, access_key: str = ACCESS_KEY, secret_key: str = SECRET_KEY
) -> minio.Minio:
    """A minio client of the tests (not the product's, common/s3.py)."""
    return minio.Minio(
        endpoint, access_key, secret_key, secure=False, region="us-east-1", http_client=_HTTP
    )


class S3Server:
    """SeaweedFS' S3 gateway on loopback ports, started by the project's own
    launcher (ops/seaweedfs.py); `start()` after `stop()` is a fresh, empty server."""

    ACCESS_KEY = ACCESS_KEY
    SECRET_KEY = SECRET_KEY

    def __init__(self, workdir: Path) -> None:
        self.port = free_port_below(55_000)
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
        from ops import seaweedfs

        data = self._workdir / "seaweedfs"
        shutil.rmtree(data, ignore_errors=True)
        ports = {part: free_port_below(55_000) for part in ("master", "volume", "filer")}
        settings = configured(**self.config(), seaweedfs_dir=str(data), seaweedfs_ports=ports)
        log = open(self._log, "ab")  # noqa: SIM115 - lives as long as the process
        self._process = subprocess.Popen(seaweedfs.command(settings), stdout=log, stderr=log)
        log.close()
        wait_until(self._answers, timeout_s=60, what="SeaweedFS' S3 gateway answering")

    def _answers(self) -> bool:
        """True once the gateway stores an object. It listens before its filer is
        ready, and the first object ever stored waits ~5 s for the master to grow
        volumes: done here, so that no test's first put runs into its timeout."""
        client = s3_client(self.endpoint)
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
