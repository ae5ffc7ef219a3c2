"""Disk helpers shared by the cache of outputs and the cache of originals."""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import time
from pathlib import Path

from common.keys import sha256_hex


def write_atomic(path: Path, data: bytes) -> os.stat_result:
    """Write `data` to `path` so that readers see either nothing or all of it;
    returns the file's stat (taken before it is in place: it may go at once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as tmp_file:
            tmp_file.write(data)
            tmp_file.flush()
            stat = os.fstat(tmp_file.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        return stat
    except BaseException:
        os.unlink(tmp)
        raise


TOUCH_INTERVAL_S = 60.0


def touch(path: Path, stat: os.stat_result) -> None:
    """Mark `path` as used now (its access time; mtime, hence ETags, untouched),
    at most once a minute: the janitor evicts the least recently used files, and
    mounts with relatime or noatime do not keep access times for it."""
    if time.time() - stat.st_atime > TOUCH_INTERVAL_S:
        with contextlib.suppress(FileNotFoundError):
            os.utime(path, ns=(time.time_ns(), stat.st_mtime_ns))


class KeyLock:
    """An exclusive lock on a key, shared by every process of this host.

    flock is released by the kernel when its holder dies, so a crashed
    process never leaves a stale lock. The holder removes the lock file
    before it lets go, so files do not pile up (one per key ever asked);
    whoever opened the file just before it was removed finds, once it holds
    it, that the path no longer names it, and starts again with the current
    file.
    """

    def __init__(self, lock_dir: Path, key: str) -> None:
        self._path = lock_dir / self.name(key)
        self._fd: int | None = None

    @staticmethod
    def name(key: str) -> str:
        """The lock file's name for `key`."""
        return sha256_hex(key)

    def acquire_before(self, deadline: float, poll_s: float = 0.005) -> bool:
        """Wait for the lock until `deadline` (time.monotonic()); False if it did not come."""
        while not self.try_acquire():
            if time.monotonic() > deadline:
                return False
            time.sleep(poll_s)
        return True

    def release(self) -> None:
        """Release the lock if held (its file is removed first)."""
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path)
        os.close(self._fd)
        self._fd = None

    def try_acquire(self) -> bool:
        """Take the lock if nobody holds it; never waits."""
        while True:
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            if self._still_named(fd):
                self._fd = fd
                return True
            os.close(fd)  # its holder removed it after we opened it: try the new one

    def _open(self) -> int:
        try:
            return os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:  # the first lock of this directory
            self._path.parent.mkdir(parents=True, exist_ok=True)
            return os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)

    def _still_named(self, fd: int) -> bool:
        try:
            current = os.stat(self._path)
        except FileNotFoundError:
            return False
        mine = os.fstat(fd)
        return (current.st_dev, current.st_ino) == (mine.st_dev, mine.st_ino)
