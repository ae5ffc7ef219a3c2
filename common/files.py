"""Disk helpers shared by the cache of outputs and the cache of originals."""

from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see either nothing or all of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as tmp_file:
            tmp_file.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


class KeyLock:
    """An exclusive lock on a key, shared by every process of this host.

    flock is released by the kernel when its holder dies, so a crashed
    process never leaves a stale lock behind. The lock files stay (empty,
    one per key) because unlinking a flock file races with new holders.
    """

    def __init__(self, lock_dir: Path, key: str) -> None:
        name = hashlib.sha256(key.encode()).hexdigest()
        try:
            self._fd = os.open(lock_dir / name, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:  # the first lock of this directory
            lock_dir.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(lock_dir / name, os.O_RDWR | os.O_CREAT, 0o644)

    def try_acquire(self) -> bool:
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def acquire(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def close(self) -> None:
        """Release the lock (if held) and the file descriptor."""
        os.close(self._fd)

    def __enter__(self) -> KeyLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
