"""Originals: fetched once, kept on disk, concurrent fetches coalesced.

Looked for in this order: the local disk, object storage (where another
host's processor may have put it), the source over HTTP.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from common.config import Settings
from common.errors import StorageUnavailable
from common.files import KeyLock, write_atomic
from common.storage import ObjectStore, original_key
from processor.fetch import SourceFetcher

log = logging.getLogger(__name__)


class OriginalStore:
    def __init__(
        self, settings: Settings, shared: ObjectStore | None, fetcher: SourceFetcher
    ) -> None:
        self._settings = settings
        self._shared = shared
        self._dir = settings.originals_dir
        self._fetcher = fetcher

    def get(self, url: str) -> tuple[bytes, bool]:
        """The original's bytes, and whether they were downloaded from the source just now."""
        path = self._path(url)
        data = _read_if_present(path)
        if data is not None:
            return data, False
        # Another processor may be downloading the same original: wait for it
        # and use its file rather than downloading again.
        with KeyLock(self._dir / ".locks", url):
            data = _read_if_present(path)
            if data is not None:
                return data, False
            data = self._from_shared_store(url)
            downloaded = data is None
            if data is None:
                data = self._fetcher.fetch(url)
            write_atomic(path, data)
            return data, downloaded

    def _from_shared_store(self, url: str) -> bytes | None:
        if self._shared is None:
            return None
        try:
            return self._shared.get(original_key(self._settings, url))
        except StorageUnavailable as exc:
            log.warning("object storage unavailable, going to the source: %s", exc.message)
            return None

    def _path(self, url: str) -> Path:
        digest = hashlib.sha256(url.encode()).hexdigest()
        return self._dir / digest[:2] / digest


def _read_if_present(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
