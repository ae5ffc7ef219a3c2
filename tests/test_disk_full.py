"""A full disk, for real: a 4 MiB tmpfs mounted where the host writes.

A full output cache is a 503 that says so, and /health says which disk; a full
disk of originals costs nothing but keeping them; the janitor keeps a disk's
free share past its byte budgets. `make test` runs as root (it installs
packages): mounting needs it, and a machine where it cannot is a failure here,
not a skip.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from common import keys
from common.file_index import FileIndex
from common.files import space_of
from ops.janitor import Budget, Usage, is_output, rebuild, sweep, to_free
from tests.support.images import photo
from tests.support.origin import Origin
from tests.support.stack import Stack
from tests.support.waiting import wait_until

DISK_BYTES = 4 * 1024 * 1024


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES}", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs (these tests need root): {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=True)


def fill(disk: Path) -> list[Path]:
    """Fill `disk` to its last byte; returns the files that did it."""
    made: list[Path] = []
    for size in (65536, 4096, 1):  # then the last partial blocks
        while True:
            path = disk / f"filler-{len(made)}"
            made.append(path)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT)
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                break
            finally:
                os.close(fd)
        if not space_of(disk).free_bytes:
            break
    return made


def health(stack: Stack) -> tuple[int, dict[str, object]]:
    answer = stack.http.request("GET", f"{stack.status_url}/health")
    return answer.status, json.loads(answer.data)


def test_a_full_output_cache_is_a_503_that_says_so(
    make_stack: Callable[..., Stack], origin: Origin, small_disk: Path
) -> None:
    stack = make_stack(local_base_path=str(small_disk / "cache"), min_free_disk_share=0.2)
    stack.start(processors=1, status=True)
    origin.add("full/disk/1/original.jpg", photo())
    assert stack.get("/full/disk/1/w100.jpg").status == 200
    fillers = fill(small_disk)
    answer = stack.get("/full/disk/1/w200.jpg")
    assert answer.status == 503, answer.data
    assert b"this host's disk is full" in answer.data
    assert answer.headers["Retry-After"] == "30"
    assert stack.get("/full/disk/1/w100.jpg").status == 200  # what is cached is served
    full = f"the disk of {small_disk / 'cache'} is full"
    wait_until(lambda: full in str(health(stack)[1]["reason"]), what="/health: the disk is full")
    assert health(stack)[0] == 503
    page = stack.http.request("GET", f"{stack.status_url}/").data.decode()
    assert str(small_disk / "cache") in page  # the page lists the filesystem
    for filler in fillers:
        filler.unlink()
    assert stack.get("/full/disk/1/w200.jpg").status == 200
    wait_until(lambda: health(stack)[0] == 200, what="healthy again")


def test_a_full_disk_of_originals_costs_only_keeping_them(
    make_stack: Callable[..., Stack], origin: Origin, small_disk: Path
) -> None:
    stack = make_stack(originals_path=str(small_disk / "originals"))
    stack.start(processors=1)
    origin.add("full/disk/2/original.jpg", photo())
    fill(small_disk)
    for output in ("w100.jpg", "w200.jpg"):  # the second would make the master
        assert stack.get(f"/full/disk/2/{output}").status == 200
    log = stack.log("processor_0")
    assert "no space left on the disk of" in log
    assert "UnsupportedImage" not in log  # a full disk never blames the image


def test_the_janitor_keeps_the_free_share_past_its_budgets(small_disk: Path) -> None:
    now = time.time()
    files = []
    for index in range(12):  # 3 MiB of outputs, far under their budget
        path = keys.OutputRef.from_cache_key(f"m/t/{index}/w1.jpg").path_under(small_disk / "cache")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 262144)
        os.utime(path, (now - 1000 + index, now - 1000 + index))  # oldest first
        files.append(path)
    assert to_free(small_disk / "cache", 0.0) == 0  # off
    assert space_of(small_disk).free_share < 0.5
    needed = to_free(small_disk / "cache", 0.5)
    assert needed > 0
    budget = Budget("outputs", small_disk / "cache", 10**12, is_output)
    outputs = FileIndex(budget.directory)
    rebuild(budget, outputs)
    sweep(budget, outputs, Usage(), 60, free_bytes=needed)
    assert space_of(small_disk).free_share >= 0.5
    kept = [path.exists() for path in files]
    assert kept == sorted(kept) and kept[-1]  # the least recently used went, the newest stayed
    assert to_free(small_disk / "cache", 0.5) == 0
