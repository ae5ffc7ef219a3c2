"""Uploads that wait on disk, not in RabbitMQ, once `image.upload` is at its bound.

A processor that finds `image.upload` holding `upload_backlog_max` messages
or more writes the UploadJob (its wire format, payload included) to
`<spill_path>/<sha256 of its key>` instead of publishing it; the uploader of
the same host stores spilled uploads from there, at the same rate limit, and
removes each file once its object is stored. So the broker's memory stays
bounded, originals never pile up in it by the gigabyte, nothing is lost (a
file goes only after its put), and the request path never waits for it.

What the directory holds, and its oldest uploads, are known from its index
(common/file_index.py), never by listing it: a put and a drain cost the same
at one file and at a million. The directory holds at most `spill_max_bytes`:
past it `put` raises DiskFull, as a full disk does (the processor then
publishes the upload after all, or, past upload_inline_max_bytes, drops it
and logs it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

from common.errors import DiskFull, MessageDecodeError
from common.file_index import Entry, FileIndex
from common.files import directory_identity, write_atomic
from common.held_journal import HeldJournal, pending_of_gone_processes
from common.keys import sha256_hex
from common.messages import HELD_FILE_NAME, UploadJob

log = logging.getLogger(__name__)


class Spill:
    def __init__(self, directory: Path, max_bytes: int) -> None:
        self._dir = directory
        self._max_bytes = max_bytes
        self._index = FileIndex(directory)

    def put(self, upload: UploadJob, name: str | None = None, durable: bool = False) -> None:
        """Keep `upload` on disk as `name` (by default its key's digest: the same key
        twice keeps the newer bytes), `durable`ly (common.files.write_atomic);
        DiskFull when that would take the directory past spill_max_bytes."""
        data = upload.encode()
        held = self.bytes_held()
        if held + len(data) > self._max_bytes:
            raise DiskFull(f"{self._dir} holds spill_max_bytes ({held:,} bytes) of uploads")
        path = self._dir / (name or sha256_hex(upload.key))
        stat = write_atomic(path, data, durable=durable)
        self._index.added(path, stat.st_size)

    def adopt(self, path: Path, key: str) -> None:
        """Take `path` (an upload's file on the same filesystem, its wire format) as
        the spilled upload of `key`."""
        target = self._dir / sha256_hex(key)
        os.replace(path, target)
        self._index.added(target, target.stat().st_size)

    def bytes_held(self) -> int:
        return self._index.totals()[1]

    def count(self) -> int:
        return self._index.totals()[0]

    def oldest(self, limit: int, before: float = float("inf")) -> list[Path]:
        """Up to `limit` spilled uploads, oldest first (put before `before`, epoch seconds)."""
        return [self._dir / e.name for e in self._index.oldest(limit) if e.used_s < before]

    def stored(self, path: Path) -> None:
        """The upload of `path` is stored: its file goes."""
        path.unlink(missing_ok=True)
        self._index.removed(path)

    def rebuild_if_needed(self) -> int:
        """Index the uploads of a spill directory that has no index (one kept by
        an earlier version, or whose index was lost); how many were added."""
        if self._index.built():
            return 0
        return self._index.rebuilt(self._walked())

    def _walked(self) -> Iterator[Entry]:
        try:
            entries = list(os.scandir(self._dir))
        except FileNotFoundError:
            return
        for entry in entries:
            if entry.name.startswith(".") or not entry.is_file(follow_symlinks=False):
                continue  # a file being written, or set aside, starts with a dot
            with contextlib.suppress(FileNotFoundError):
                stat = entry.stat(follow_symlinks=False)
                yield Entry(entry.name, stat.st_size, stat.st_mtime)

    def read(self, path: Path) -> UploadJob | None:
        """The upload kept in `path`; None (and the file set aside) when it does not decode."""
        try:
            return UploadJob.decode(path.read_bytes())
        except MessageDecodeError as exc:
            log.error("spilled upload %s does not decode (%s): set aside", path.name, exc.message)
            path.rename(path.with_name(f".bad-{path.name}"))
            self._index.removed(path)
            return None
        except FileNotFoundError:
            self._index.removed(path)
            return None


HELD_DIR = "held"


def upload_host(spill_dir: Path) -> str:
    """What names this host's queue of uploads by reference: the identity of the
    directory that holds their files (every program of the host that sees it)."""
    return directory_identity(spill_dir / HELD_DIR)


class HeldUploads:
    """Uploads by reference (DESIGN.md: bytes cross RabbitMQ only when they must
    leave the host): each file of `<spill_path>/held/` holds one UploadJob whole
    (its wire format, bytes and all), written durably before a small message
    of this host's upload queue (amqp.host_upload_queue) names it; this host's
    uploader stores it and removes the file. Bounded by spill_max_bytes, as the
    spill beside it. A lost host loses these, objects that can be made again.
    """

    def __init__(self, spill_dir: Path, max_bytes: int) -> None:
        self._files = Spill(spill_dir / HELD_DIR, max_bytes)
        self._dir = spill_dir / HELD_DIR
        self._journal = HeldJournal(self._dir)  # what this process has not published yet
        self.host = upload_host(spill_dir)

    def hold(self, upload: UploadJob) -> UploadJob:
        """Keep `upload` on this host's disk; the message that names it, to be
        published, then `published()`. DiskFull past spill_max_bytes, or when
        the disk is full."""
        name = f"{sha256_hex(upload.key)[:16]}-{uuid.uuid4().hex[:16]}"
        self._journal.writing(name)
        try:
            self._files.put(upload, name, durable=True)  # before a message names it
        except BaseException:
            self._journal.settled(name)
            raise
        return dataclasses.replace(upload, payload=b"", file=name, host=self.host)

    def published(self, job: UploadJob) -> None:
        """RabbitMQ confirmed the message `job` that names its file."""
        self._journal.settled(job.file)

    def close(self) -> None:
        self._journal.close()

    def reclaim_unpublished(self) -> int:
        """Remove the files that processes gone since (killed between a file's
        write and its message's confirm) left without a message; how many.
        Their jobs were not acked: they are made again."""
        removed = 0
        for pending in pending_of_gone_processes(self._dir):
            for name in pending:
                if HELD_FILE_NAME.fullmatch(name):
                    self._files.stored(self._dir / name)
                    removed += 1
        return removed

    def load(self, job: UploadJob) -> UploadJob | None:
        """The upload `job` names, bytes and all (its attempts are the message's);
        None when its file is gone or does not decode (set aside)."""
        kept = self._files.read(self._dir / job.file)
        return None if kept is None else dataclasses.replace(kept, attempt=job.attempt)

    def release(self, job: UploadJob) -> None:
        """Stored, or dead-lettered with its bytes, or never published: the file
        of `job` goes."""
        self._files.stored(self._dir / job.file)
        self._journal.settled(job.file)

    def spill(self, job: UploadJob, spill: Spill) -> None:
        """The upload of `job` waits in `spill` instead, without a message."""
        self._move(self._dir / job.file, job.key, spill)
        self._journal.settled(job.file)

    def _move(self, path: Path, key: str, spill: Spill) -> None:
        spill.adopt(path, key)
        self._files.stored(path)  # its row: the file is moved already

    def spill_older_than(self, before: float, spill: Spill, limit: int) -> int:
        """Up to `limit` uploads held since before `before` (epoch seconds) move
        to `spill`, without a message; how many."""
        moved = 0
        for path in self._files.oldest(limit, before):
            upload = self._files.read(path)
            if upload is not None:
                self._move(path, upload.key, spill)
                moved += 1
        return moved

    def rebuild_if_needed(self) -> int:
        return self._files.rebuild_if_needed()
