"""Load generators: wrk over a list of paths, and a burst of identical requests."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

LUA = Path(__file__).resolve().parent / "paths.lua"
WRK_THREADS = 2


@dataclasses.dataclass(frozen=True)
class LoadResult:
    requests: int
    duration_s: float
    errors: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    bytes: int

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s


def wrk(port: int, paths: list[str], seconds: int, connections: int, work: Path) -> LoadResult:
    listing = work / f"paths-{port}-{time.monotonic_ns()}.txt"
    listing.write_text("\n".join(paths) + "\n")
    done = subprocess.run(
        [
            "wrk",
            "-t",
            str(WRK_THREADS),
            "-c",
            str(connections),
            "-d",
            f"{seconds}s",
            "--timeout",
            "30s",
            "-s",
            str(LUA),
            f"http://127.0.0.1:{port}",
        ],
        env={**os.environ, "PATHS": str(listing), "THREADS": str(WRK_THREADS)},
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 120,
    )
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    raw = json.loads(line.removeprefix("RESULT "))
    errors = sum(
        raw[k]
        for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")
    )
    return LoadResult(
        requests=raw["requests"],
        duration_s=raw["duration_us"] / 1e6,
        errors=errors,
        p50_ms=raw["p50_us"] / 1000,
        p95_ms=raw["p95_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        bytes=raw["bytes"],
    )


def fetch(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""


def burst(port: int, path: str, count: int) -> list[int]:
    """`count` simultaneous requests for one URL; their statuses."""
    url = f"http://127.0.0.1:{port}{path}"
    with concurrent.futures.ThreadPoolExecutor(count) as pool:
        return [status for status, _ in pool.map(lambda _: fetch(url), range(count))]
