"""Object storage: where results are persisted and shared between hosts.

Two backends behind one small interface: `filesystem` (a local directory)
and `s3` (any S3-compatible endpoint, in common/s3.py: the only module that
imports minio, loaded only when configured, so that processes which do not
use it do not pay its memory). Errors are translated, once, into
StorageUnavailable (try again later) or StorageRefused (permanent).
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from pathlib import Path
from typing import Protocol

from common.errors import DiskFull, StorageRefused, StorageUnavailable
from common.files import write_atomic
from common.settings import REPO_ROOT, Settings

log = logging.getLogger(__name__)


class ObjectStore(Protocol):
    # True when get() is a local disk read, cheap enough for an event loop.
    reads_are_local: bool

    def prepare(self) -> None:
        """Start-up step: the bucket (or directory) exists, created when allowed."""
        ...

    def put(self, key: str, data: bytes, content_type: str, same_as: Path | None = None) -> None:
        """Store `data` as `key`. `same_as`: a file of this host holding the same
        bytes, which a store on this host may link instead of writing them again."""
        ...

    def get(self, key: str) -> bytes | None:
        """The object's bytes, or None when there is no such object."""
        ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None:
        """Remove the object; no error when there is none."""
        ...

    def keys(self, prefix: str, start_after: str = "", limit: int = 0) -> list[str]:
        """Keys under `prefix` (a directory: ends with "/") in order, those after
        `start_after` only, at most `limit` of them (0: all): a page of a listing."""
        ...


class FilesystemStore:
    reads_are_local = True

    def __init__(self, root: Path) -> None:
        self._root = root.resolve()
        self._inside = str(self._root) + os.sep

    def _path(self, key: str) -> Path:
        # normpath, not resolve(): resolve() stats every directory of the path, a
        # dozen system calls per object, and what is refused here is a key whose
        # ".." climbs out (links inside the directory are the operator's own).
        path = os.path.normpath(os.path.join(self._inside, key))
        if not (path + os.sep).startswith(self._inside):
            raise StorageRefused(f"key {key!r} leaves the storage directory")
        return Path(path)

    def prepare(self) -> None:
        try:
            self._root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageUnavailable(f"cannot create {self._root}: {exc.strerror}") from exc

    def put(self, key: str, data: bytes, content_type: str, same_as: Path | None = None) -> None:
        target = self._path(key)
        try:
            if same_as is None or not _linked(same_as, target):
                write_atomic(target, data)
        except DiskFull as exc:
            raise StorageUnavailable(f"cannot write {key}: {exc.message}") from exc
        except OSError as exc:
            raise StorageUnavailable(f"cannot write {key}: {exc.strerror}") from exc

    def get(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise StorageUnavailable(f"cannot read {key}: {exc.strerror}") from exc

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink(missing_ok=True)
        except OSError as exc:
            raise StorageUnavailable(f"cannot delete {key}: {exc.strerror}") from exc

    def keys(self, prefix: str, start_after: str = "", limit: int = 0) -> list[str]:
        top = self._path(prefix)
        try:
            found = [path for path in top.rglob("*") if path.is_file()]
        except OSError as exc:
            raise StorageUnavailable(f"cannot list {prefix}: {exc.strerror}") from exc
        # Temporary files of writes in progress (common.files.write_atomic) are hidden.
        keys = [p.relative_to(self._root).as_posix() for p in found if not p.name.startswith(".")]
        after = sorted(key for key in keys if key > start_after)
        return after[:limit] if limit else after


def _linked(source: Path, target: Path) -> bool:
    """Give `source` the name `target` too (atomically); False when `source` is
    gone or on another filesystem. A second name, not a second copy: originals
    are often megabytes, and writing a 2.4 MB one again cost ~9 ms of CPU here
    (bench/TUNING.md)."""
    tmp = target.with_name(f".tmp-link-{os.getpid()}-{threading.get_ident()}")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except FileNotFoundError:
        return False
    except OSError as exc:
        if exc.errno == errno.EXDEV:
            return False
        raise
    os.replace(tmp, target)
    return True


def open_store(settings: Settings) -> ObjectStore:
    if settings.storage_backend == "s3":
        from common.s3 import S3Store

        return S3Store(settings)
    return FilesystemStore(REPO_ROOT / settings.storage_path)
