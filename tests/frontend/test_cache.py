from __future__ import annotations

import email.utils
import os
import time
from pathlib import Path

import pytest
from tornado.httputil import HTTPHeaders

from common.keys import OutputRef
from frontend.answers import not_modified
from frontend.cache import CachedFile, OutputCache

KEY = OutputRef.from_cache_key("a/b/1/w20.jpg")


def test_written_outputs_are_read_back(tmp_path: Path) -> None:
    cache = OutputCache(tmp_path, memory_bytes=1000)
    assert cache.read(OutputRef.from_cache_key("a/b/1/w10.jpg")) is None
    cache.write(OutputRef.from_cache_key("a/b/1/w10.jpg"), b"first")
    first = cache.read(OutputRef.from_cache_key("a/b/1/w10.jpg"))
    assert first is not None and first.data == b"first" and first.size == 5


def test_memory_never_serves_a_replaced_or_deleted_file(tmp_path: Path) -> None:
    cache = OutputCache(tmp_path, memory_bytes=1000)
    cache.write(KEY, b"first")
    assert cache.read(KEY).data == b"first"  # type: ignore[union-attr]
    cache.write(KEY, b"second!")
    assert cache.read(KEY).data == b"second!"  # type: ignore[union-attr]
    os.unlink(KEY.path_under(tmp_path))
    assert cache.read(KEY) is None


def test_memory_is_bounded(tmp_path: Path) -> None:
    cache = OutputCache(tmp_path, memory_bytes=800)
    for index in range(50):
        cache.write(OutputRef.from_cache_key(f"a/b/{index}/w10.jpg"), bytes(100))
        cache.read(OutputRef.from_cache_key(f"a/b/{index}/w10.jpg"))
    assert cache._memory_bytes <= 800  # noqa: SLF001
    assert len(cache._memory) == 8  # noqa: SLF001
    assert all(
        cache.read(OutputRef.from_cache_key(f"a/b/{index}/w10.jpg")) is not None
        for index in range(50)
    )


def test_memory_keeps_what_is_read_not_what_is_written(tmp_path: Path) -> None:
    cache = OutputCache(tmp_path, memory_bytes=1000)
    cache.write(KEY, b"made")
    assert cache._memory_bytes == 0  # noqa: SLF001
    assert cache.read(KEY).data == b"made"  # type: ignore[union-attr]
    assert cache._memory_bytes == 4  # noqa: SLF001


def test_etag_changes_with_the_file(tmp_path: Path) -> None:
    cache = OutputCache(tmp_path)
    cache.write(KEY, b"one")
    before = cache.read(KEY).etag  # type: ignore[union-attr]
    os.utime(KEY.path_under(tmp_path), ns=(1, 1))
    assert cache.read(KEY).etag != before  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("since_s", "current"),
    [(-10, False), (0, True), (600, True), (None, False), ("nonsense", False)],
)
def test_if_modified_since_is_a_date_the_client_saw(since_s: object, current: bool) -> None:
    """A file modified at T is current for If-Modified-Since T or later, never for a
    date in the future (a client clock ahead, or a forged header)."""
    modified = time.time() - 1800
    cached = CachedFile(b"x", 1, modified, int(modified * 1e9))
    if since_s is None:
        value = email.utils.formatdate(time.time() + 86400, usegmt=True)  # tomorrow
    elif isinstance(since_s, int):
        value = email.utils.formatdate(int(modified) + since_s, usegmt=True)
    else:
        value = str(since_s)
    headers = HTTPHeaders({"If-Modified-Since": value})
    assert not_modified(cached, headers) is current
