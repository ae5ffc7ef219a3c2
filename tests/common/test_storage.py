"""Both storage backends against real storage: SeaweedFS' S3 gateway and a directory."""

from __future__ import annotations

import concurrent.futures
import threading
from pathlib import Path

import minio
import pytest

from common.errors import StorageRefused, StorageUnavailable
from common.s3 import S3Store
from common.storage import FilesystemStore, ObjectStore
from tests.support.s3 import S3Server, S3View, s3_client
from tests.support.settings import configured


def s3_store(server: S3Server | S3View, **overrides: object) -> S3Store:
    return S3Store(configured(**{**server.config(), **overrides}))


def client(server: S3Server | S3View) -> minio.Minio:
    return s3_client(server.endpoint)


@pytest.fixture(params=[pytest.param("s3", marks=pytest.mark.stack), "filesystem"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "filesystem":
        backend: ObjectStore = FilesystemStore(tmp_path / "objects")
    else:
        backend = s3_store(request.getfixturevalue("s3"))
    backend.prepare()
    return backend


def test_put_then_get(store: ObjectStore) -> None:
    store.put("public/images/test/a/b/1/w10.jpg", b"\xff\xd8bytes", "image/jpeg")
    assert store.get("public/images/test/a/b/1/w10.jpg") == b"\xff\xd8bytes"
    store.put("public/images/test/a/b/1/w10.jpg", b"\xff\xd8bytes", "image/jpeg")  # idempotent
    assert store.get("public/images/test/a/b/1/w10.jpg") == b"\xff\xd8bytes"


def test_put_same_as_a_file_stores_the_same_bytes(store: ObjectStore, tmp_path: Path) -> None:
    original = tmp_path / "original"
    original.write_bytes(b"\x89PNG first")
    store.put("public/images/test/a/b/1/original", b"\x89PNG first", "x/y", same_as=original)
    # The file is replaced the way the caches replace files (a new one renamed over it).
    replacement = tmp_path / "replacement"
    replacement.write_bytes(b"\x89PNG second")
    replacement.replace(original)
    assert store.get("public/images/test/a/b/1/original") == b"\x89PNG first"
    original.unlink()  # evicted from the cache: the object stays
    assert store.get("public/images/test/a/b/1/original") == b"\x89PNG first"
    # A file gone already: the bytes are written instead.
    store.put("public/images/test/a/b/2/original", b"\x89PNG third", "x/y", same_as=original)
    assert store.get("public/images/test/a/b/2/original") == b"\x89PNG third"


def test_filesystem_put_same_as_a_file_links_it(tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path / "objects")
    store.prepare()
    original = tmp_path / "original"
    original.write_bytes(b"megabytes")
    store.put("a/b/1/original", b"megabytes", "x/y", same_as=original)
    assert (tmp_path / "objects" / "a/b/1/original").stat().st_ino == original.stat().st_ino
    assert store.keys("a/") == ["a/b/1/original"]  # no temporary name left behind


def test_missing_object_is_none(store: ObjectStore) -> None:
    assert store.get("public/images/test/nothing/here.jpg") is None


def test_s3_objects_keep_their_content_type(s3: S3View) -> None:
    store = s3_store(s3)
    store.prepare()
    store.put("k/w1.webp", b"RIFF....WEBP", "image/webp")
    stat = client(s3).stat_object(s3.bucket(), "k/w1.webp")
    assert stat.content_type == "image/webp"
    assert stat.size == 12


def test_s3_bucket_is_created_when_allowed_and_refused_otherwise(s3: S3View) -> None:
    s3_store(s3, s3_bucket=s3.bucket("made-at-start")).prepare()
    assert client(s3).bucket_exists(s3.bucket("made-at-start"))
    with pytest.raises(StorageRefused):
        s3_store(s3, s3_bucket=s3.bucket("not-allowed"), s3_create_bucket=False).prepare()


def test_puts_racing_to_recreate_a_lost_bucket_all_succeed(s3: S3View) -> None:
    # As after a fresh store came back: every upload thread finds NoSuchBucket
    # at once, and all but one find the bucket made when they try to make it.
    store = s3_store(s3, s3_bucket=s3.bucket("raced"))
    barrier = threading.Barrier(8)

    def put(index: int) -> None:
        barrier.wait()
        store.put(f"k/{index}", b"x", "image/jpeg")

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        for done in [pool.submit(put, index) for index in range(8)]:
            done.result()  # no StorageRefused("BucketAlreadyOwnedByYou")
    assert all(store.get(f"k/{index}") == b"x" for index in range(8))


def test_s3_down_is_unavailable_not_a_crash(own_s3: S3Server) -> None:
    store = s3_store(own_s3)
    store.prepare()
    own_s3.stop()
    with pytest.raises(StorageUnavailable):
        store.put("k/x.jpg", b"x", "image/jpeg")
    with pytest.raises(StorageUnavailable):
        store.get("k/x.jpg")


def test_filesystem_keys_cannot_leave_the_root(tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path / "objects")
    with pytest.raises(StorageRefused):
        store.put("../escape.jpg", b"x", "image/jpeg")
