"""Originals: fetched once, kept on disk, concurrent fetches coalesced.

Looked for in this order: the local disk, object storage (where another
host's processor may have put it), the source over HTTP.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import urllib3

from common.config import Settings
from common.errors import SourceNotFound, SourceTooLarge, SourceUnavailable, StorageUnavailable
from common.files import KeyLock, write_atomic
from common.storage import ObjectStore, original_key

log = logging.getLogger(__name__)
_CHUNK_BYTES = 256 * 1024
_MAX_REDIRECTS = 5


class OriginalStore:
    def __init__(self, settings: Settings, shared: ObjectStore | None) -> None:
        self._settings = settings
        self._shared = shared
        self._dir = settings.originals_dir
        self._max_bytes = settings.max_source_bytes
        self._http = urllib3.PoolManager(
            num_pools=32,
            maxsize=1,
            timeout=urllib3.Timeout(
                connect=settings.source_connect_timeout_s, read=settings.source_read_timeout_s
            ),
            retries=urllib3.Retry(total=None, connect=0, read=0, status=0, redirect=_MAX_REDIRECTS),
        )

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
                data = self._download(url)
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

    def _download(self, url: str) -> bytes:
        try:
            response = self._http.request("GET", url, preload_content=False)
        except urllib3.exceptions.HTTPError as exc:
            raise SourceUnavailable(f"cannot reach the source: {type(exc).__name__}") from exc
        try:
            if response.status in (404, 410):
                raise SourceNotFound(f"the source answered {response.status}")
            if response.status != 200:
                raise SourceUnavailable(f"the source answered {response.status}")
            data = self._read_capped(response)
        except BaseException:
            response.close()  # unread bytes may remain: never reuse this connection
            raise
        response.release_conn()
        return data

    def _read_capped(self, response: urllib3.BaseHTTPResponse) -> bytes:
        declared = response.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > self._max_bytes:
            raise SourceTooLarge()
        chunks, size = [], 0
        try:
            for chunk in response.stream(_CHUNK_BYTES):
                size += len(chunk)
                if size > self._max_bytes:
                    raise SourceTooLarge()
                chunks.append(chunk)
        except urllib3.exceptions.HTTPError as exc:
            raise SourceUnavailable(f"reading the source failed: {type(exc).__name__}") from exc
        return b"".join(chunks)


def _read_if_present(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
