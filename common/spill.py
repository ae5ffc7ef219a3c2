"""Uploads that wait on disk, not in RabbitMQ, once `image.upload` is at its bound.

A processor that finds `image.upload` holding `upload_backlog_max` messages
or more writes the UploadJob (its wire format, payload included) to
`<spill_path>/<sha256 of its key>` instead of publishing it; the uploader of
the same host stores spilled uploads from there, at the same rate limit, and
removes each file once its object is stored. So the broker's memory stays
bounded, originals never pile up in it by the gigabyte, nothing is lost (a
file goes only after its put), and the request path never waits for it.

The directory holds at most `spill_max_bytes`: past it `put` raises DiskFull,
as a full disk does (the processor then publishes the upload after all, or,
past upload_inline_max_bytes, drops it and logs it).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from common.errors import DiskFull, MessageDecodeError
from common.files import write_atomic
from common.keys import sha256_hex
from common.messages import UploadJob

log = logging.getLogger(__name__)

_RESCAN_S = 1.0  # the directory's size is summed at most once a second per process


class Spill:
    def __init__(self, directory: Path, max_bytes: int) -> None:
        self._dir = directory
        self._max_bytes = max_bytes
        self._held = (0, float("-inf"))  # bytes in the directory, when they were summed

    def put(self, upload: UploadJob) -> None:
        """Keep `upload` on disk (the same key twice keeps the newer bytes);
        DiskFull when that would take the directory past spill_max_bytes."""
        data = upload.encode()
        held, summed_at = self._held
        if time.monotonic() - summed_at > _RESCAN_S:
            held, summed_at = self.bytes_held(), time.monotonic()
        if held + len(data) > self._max_bytes:
            self._held = (held, summed_at)
            raise DiskFull(f"{self._dir} holds spill_max_bytes ({held:,} bytes) of uploads")
        write_atomic(self._dir / sha256_hex(upload.key), data)
        # Counted until the next sum: other processes of the host put and remove too.
        self._held = (held + len(data), summed_at)

    def bytes_held(self) -> int:
        return sum(entry.stat().st_size for entry in self._entries())

    def oldest(self, limit: int) -> list[Path]:
        """Up to `limit` spilled uploads, oldest first (no file being written)."""
        entries = sorted(self._entries(), key=lambda entry: entry.stat().st_mtime)
        return [Path(entry.path) for entry in entries[:limit]]

    def count(self) -> int:
        return len(self._entries())

    def _entries(self) -> list[os.DirEntry[str]]:
        """The spilled uploads (a file being written, or set aside, starts with a dot)."""
        try:
            return [e for e in os.scandir(self._dir) if not e.name.startswith(".")]
        except FileNotFoundError:
            return []

    def read(self, path: Path) -> UploadJob | None:
        """The upload kept in `path`; None (and the file set aside) when it does not decode."""
        try:
            return UploadJob.decode(path.read_bytes())
        except MessageDecodeError as exc:
            log.error("spilled upload %s does not decode (%s): set aside", path.name, exc.message)
            path.rename(path.with_name(f".bad-{path.name}"))
            return None
        except FileNotFoundError:
            return None
