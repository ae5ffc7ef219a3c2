"""The local cache of outputs: files under local_base_path (common/keys.py lays them out).

Recently read files are also kept in memory (up to `memory_bytes`), checked
against the file's size and mtime on every read: one stat() instead of an
open, a read and a copy, and a file replaced or deleted on disk is never
served stale. A file too large to keep is mapped, not read: its pages are
the kernel's page cache, shared by every connection and process that sends
it, so a client that reads slowly (or not at all) holds no copy of it.
Outputs are written whole and renamed into place, never changed in place: a
mapping stays valid, and whole, after its file is replaced or evicted.
"""

from __future__ import annotations

import collections
import dataclasses
import email.utils
import functools
import mmap
import os
from pathlib import Path

from common.file_index import FileIndex
from common.files import KeyLock, directory_identity, touch, write_atomic
from common.keys import OutputRef


@dataclasses.dataclass(frozen=True)
class CachedFile:
    data: bytes | memoryview  # a memoryview of a mapped file past memory_bytes / 8
    size: int
    mtime_s: float
    mtime_ns: int

    @property
    def etag(self) -> str:
        return f'"{self.size:x}-{self.mtime_ns:x}"'

    @functools.cached_property
    def last_modified(self) -> str:
        """The Last-Modified header's value (formatted once: hot files answer often)."""
        return email.utils.formatdate(self.mtime_s, usegmt=True)


class OutputCache:
    def __init__(self, root: Path, memory_bytes: int = 0) -> None:
        self._root = root
        self._index = FileIndex(root)  # what the janitor evicts from
        self._lock_dir = root / ".locks"
        self._memory: collections.OrderedDict[OutputRef, CachedFile] = collections.OrderedDict()
        self._memory_bytes = 0
        self._memory_limit = memory_bytes
        # What this cache is called: a processor that writes to it too says so (common.files).
        self.identity = directory_identity(root)

    def read(self, key: OutputRef) -> CachedFile | None:
        """The cached output, or None on a miss."""
        path = key.path_under(self._root)
        try:
            stat = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            self._forget(key)
            return None
        touch(path, stat)
        kept = self._memory.get(key)
        if kept is not None and (kept.size, kept.mtime_ns) == (stat.st_size, stat.st_mtime_ns):
            self._memory.move_to_end(key)
            return kept
        cached = self._open(path)
        if cached is not None:
            self._remember(key, cached)
        return cached

    def written_here(self, key: OutputRef) -> CachedFile | None:
        """The output a processor of this host has just written to this cache (its
        reply said so), as `write` would return it; None when it is gone already."""
        self._forget(key)
        return self._open(key.path_under(self._root))

    def _open(self, path: Path) -> CachedFile | None:
        """The file at `path`, read (small) or mapped (large); None when it is gone."""
        try:
            with open(path, "rb") as file:
                stat = os.fstat(file.fileno())
                if self._kept_in_memory(stat.st_size) or not stat.st_size:
                    data: bytes | memoryview = file.read()
                else:  # mapped: the mapping outlives the file descriptor
                    data = memoryview(mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ))
        except FileNotFoundError:
            return None
        return CachedFile(data, stat.st_size, stat.st_mtime, stat.st_mtime_ns)

    def _kept_in_memory(self, size: int) -> bool:
        """Whether a file of `size` bytes is read into memory (and remembered);
        larger ones would push out many small hot ones, and are mapped instead."""
        return size <= self._memory_limit // 8

    def _remember(self, key: OutputRef, cached: CachedFile) -> None:
        self._forget(key)
        if not self._kept_in_memory(cached.size):
            return
        self._memory[key] = cached
        self._memory_bytes += cached.size
        while self._memory_bytes > self._memory_limit:
            _, evicted = self._memory.popitem(last=False)
            self._memory_bytes -= evicted.size

    def _forget(self, key: OutputRef) -> None:
        dropped = self._memory.pop(key, None)
        if dropped is not None:
            self._memory_bytes -= dropped.size

    def write(self, key: OutputRef, data: bytes) -> CachedFile:
        """Store `data` as `key`; returns it as a read would have. Kept in memory
        only once read: most new outputs are asked once, and a frontend that
        kept each one it made would fill its memory with them (bench/TUNING.md).
        A large one is answered from its file, mapped, as a read would: the
        bytes received go at once, however slowly its clients read."""
        path = key.path_under(self._root)
        stat = write_atomic(path, data)
        self._index.added(path, stat.st_size)
        self._forget(key)
        written = CachedFile(data, stat.st_size, stat.st_mtime, stat.st_mtime_ns)
        if self._kept_in_memory(len(data)) or not data:
            return written
        # Mapped (replaced since by another frontend: the same); evicted already (the
        # janitor may): the bytes, then.
        return self._open(path) or written

    def lock(self, key: OutputRef) -> KeyLock:
        """The host-wide lock that lets one frontend process produce `key`."""
        return KeyLock(self._lock_dir, key.cache_key)
