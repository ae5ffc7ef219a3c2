"""Disk helpers shared by the cache of outputs and the cache of originals."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import logging
import os
import re
import socket
import tempfile
import time
import uuid
from pathlib import Path

from common.errors import DiskFull
from common.keys import sha256_hex

log = logging.getLogger(__name__)
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def write_atomic(path: Path, data: bytes, durable: bool = False) -> os.stat_result:
    """Write `data` to `path` so that readers see either nothing or all of it;
    returns the file's stat (taken before it is in place: it may go at once).
    `durable`: on the disk before this returns (the file, then its name), for
    the only copy of something. Raises DiskFull when the disk (or a quota) has
    no space left."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    except OSError as exc:
        raise_if_no_space(exc, path)
        raise
    try:
        with os.fdopen(fd, "wb") as tmp_file:
            tmp_file.write(data)
            tmp_file.flush()
            if durable:
                os.fsync(tmp_file.fileno())
            stat = os.fstat(tmp_file.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        if durable:
            directory = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        return stat
    except BaseException as exc:
        os.unlink(tmp)
        if isinstance(exc, OSError):
            raise_if_no_space(exc, path)
        raise


IDENTITY_NAME = ".identity"


def directory_identity(directory: Path) -> str:
    """A name for `directory` that every process which sees it shares (made by the
    first that asks, kept in it: this host's name and a random part): two
    processes that give the same name see the same files, whatever their
    hostnames (containers), and only they do."""
    path = directory / IDENTITY_NAME
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    made = directory / f".tmp-identity-{uuid.uuid4().hex}"
    host = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40]
    write_atomic(made, f"{host}-{uuid.uuid4().hex[:12]}".encode())
    try:
        os.link(made, path)  # the first one in place is everyone's
    except FileExistsError:
        pass
    finally:
        made.unlink()
    return path.read_text().strip()


def raise_if_no_space(exc: OSError, path: Path) -> None:
    """DiskFull (whose message names no path: clients read it) for a full disk."""
    if exc.errno in NO_SPACE:
        log.error("no space left on the disk of %s: %s", path.parent, exc.strerror)
        raise DiskFull() from exc


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
            try:
                return os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
            except FileNotFoundError:  # the first lock of this directory
                self._path.parent.mkdir(parents=True, exist_ok=True)
                return os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:  # no inode left for a lock file: a full disk
            raise_if_no_space(exc, self._path)
            raise

    def _still_named(self, fd: int) -> bool:
        try:
            current = os.stat(self._path)
        except FileNotFoundError:
            return False
        mine = os.fstat(fd)
        return (current.st_dev, current.st_ino) == (mine.st_dev, mine.st_ino)


@dataclasses.dataclass(frozen=True)
class Space:
    """What a filesystem has left (statvfs: what an unprivileged writer may use)."""

    path: str  # the directory asked about
    free_bytes: int
    total_bytes: int
    free_inodes: int
    total_inodes: int
    device: int  # st_dev: directories on one filesystem have the same

    @property
    def free_share(self) -> float:
        """The smaller of the free shares of bytes and of inodes (either fills a disk)."""
        shares = [self.free_bytes / self.total_bytes if self.total_bytes else 1.0]
        if self.total_inodes:  # some filesystems have no fixed inode count
            shares.append(self.free_inodes / self.total_inodes)
        return min(shares)


def space_of(directory: Path) -> Space:
    """The space left on the filesystem of `directory` (or of its nearest existing parent)."""
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    figures = os.statvfs(existing)
    return Space(
        str(directory),
        figures.f_bavail * figures.f_frsize,
        figures.f_blocks * figures.f_frsize,
        figures.f_favail,
        figures.f_files,
        os.stat(existing).st_dev,
    )
