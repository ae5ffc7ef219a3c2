"""Originals: fetched once, kept on disk once they have decoded, concurrent fetches coalesced.

Looked for in this order: the local disk, object storage (where another
host's processor may have put it), the source over HTTP. A downloaded
original is kept (on disk here; in object storage by the processor) only
when the work done with it succeeded: an HTML error page or a truncated
body answered with 200 is never cached, and the next request asks the
source again.

A job that has to wait for another one's download leaves a mark (a file
beside the lock): the downloading job reads it (`asked_again`) to learn that
another size of the same image is wanted now, and makes the image's master
with the same decode instead of a second decode later.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from common import keys
from common.errors import DiskFull, ResizeTimeout, StorageUnavailable
from common.file_index import FileIndex
from common.files import KeyLock, touch, write_atomic
from common.metrics import DownloadFigures
from common.settings import Settings
from common.sources import normalise_host
from common.storage import ObjectStore
from processor.fetch import SourceFetcher

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Original:
    data: bytes
    downloaded: bool  # from the source just now (not yet stored anywhere)


class OriginalStore:
    def __init__(
        self,
        settings: Settings,
        shared: ObjectStore | None,
        fetcher: SourceFetcher,
        downloads: DownloadFigures,
    ) -> None:
        self._settings = settings
        self._shared = shared
        self._dir = settings.originals_dir
        self._index = FileIndex(self._dir)  # what the janitor evicts from
        self._fetcher = fetcher
        self._downloads = downloads

    @contextlib.contextmanager
    def open(
        self, url: str, shared_key: str, deadline: float, explicit: bool = False
    ) -> Iterator[Original]:
        """The original of `url` (kept in object storage as `shared_key`; `explicit`:
        a request's `source=`). A downloaded one is written to disk when the
        `with` block ends without an exception, not before."""
        path = self.path(url)
        data = _read_if_present(path)
        if data is not None:
            yield Original(data, downloaded=False)
            return
        # Another job (of this process or another) may be downloading the same
        # original: wait for it and use its file rather than downloading again.
        lock = KeyLock(self._dir / ".locks", url)
        try:
            if not lock.try_acquire():
                self._asked_path(url).touch()
                if not lock.acquire_before(deadline):
                    raise ResizeTimeout("waited too long for another download of the same original")
            data = _read_if_present(path)
            if data is not None:
                yield Original(data, downloaded=False)
                return
            data = self._from_shared_store(shared_key)
            if data is not None:
                self._keep(path, data)
                yield Original(data, downloaded=False)
                return
            with self._downloads.measure(normalise_host(urlsplit(url).hostname or "")):
                data = self._fetcher.fetch(url, deadline, explicit)
            self._downloads.bytes.inc(len(data))
            self._downloads.sizes.observe(len(data))
            original = Original(data, downloaded=True)
            yield original
            self._keep(path, original.data)  # stored only after it had decoded once
        finally:
            # Whoever held the lock last clears the mark: it was meant for this hold.
            self._asked_path(url).unlink(missing_ok=True)
            lock.release()

    def asked_again(self, url: str) -> bool:
        """True when another job has waited for the original of `url` since its
        download began (the mark is cleared: each wait is counted once)."""
        try:
            self._asked_path(url).unlink()
        except FileNotFoundError:
            return False
        return True

    def _asked_path(self, url: str) -> Path:
        return self._dir / ".locks" / f"{KeyLock.name(url)}.asked"

    def _from_shared_store(self, key: str) -> bytes | None:
        if self._shared is None:
            return None
        try:
            return self._shared.get(key)
        except StorageUnavailable as exc:
            log.warning("object storage unavailable, going to the source: %s", exc.message)
            return None

    def path(self, url: str) -> Path:
        """Where the original of `url` is kept on this host's disk."""
        return keys.original_path(self._settings, url)

    def _keep(self, path: Path, data: bytes) -> None:
        """Keep an original on this host's disk; a full disk only costs the next job a fetch."""
        try:
            stat = write_atomic(path, data)
        except DiskFull as exc:
            log.error("original not kept: %s", exc.message)
            return
        self._index.added(path, stat.st_size)


def _read_if_present(path: Path) -> bytes | None:
    try:
        with open(path, "rb") as file:
            touch(path, os.fstat(file.fileno()))
            return file.read()
    except FileNotFoundError:
        return None
