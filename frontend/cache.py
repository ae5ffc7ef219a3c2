"""The local cache of outputs: files under local_base_path, laid out like the URL path."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

from common.files import KeyLock, write_atomic


@dataclasses.dataclass(frozen=True)
class CachedFile:
    data: bytes
    size: int
    mtime_s: float
    etag: str
    read_at_s: float  # when it was read: the Date of the answer


class OutputCache:
    def __init__(self, root: Path) -> None:
        self._root = root
        self._lock_dir = root / ".locks"

    def read(self, key: str) -> CachedFile | None:
        """The cached output, or None on a miss."""
        try:
            fd = os.open(self._root / key, os.O_RDONLY)
        except (FileNotFoundError, NotADirectoryError):
            return None
        with os.fdopen(fd, "rb") as file:
            stat = os.fstat(fd)
            data = file.read()
        etag = f'"{stat.st_size:x}-{stat.st_mtime_ns:x}"'
        return CachedFile(data, stat.st_size, stat.st_mtime, etag, time.time())

    def write(self, key: str, data: bytes) -> None:
        write_atomic(self._root / key, data)

    def lock(self, key: str) -> KeyLock:
        """The host-wide lock that lets one frontend process produce `key`."""
        return KeyLock(self._lock_dir, key)
