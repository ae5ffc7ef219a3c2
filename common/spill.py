"""Uploads that wait on disk, not in RabbitMQ, once `image.upload` is at its bound.

A processor that finds `image.upload` holding `upload_backlog_max` messages
or more writes the UploadJob (its wire format, payload included) to
`<spill_path>/<sha256 of its key>` instead of publishing it; the uploader of
the same host stores spilled uploads from there, at the same rate limit, and
removes each file once its object is stored. So the broker's memory stays
bounded, originals never pile up in it by the gigabyte, nothing is lost (a
file goes only after its put), and the request path never waits for it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from common.errors import MessageDecodeError
from common.files import write_atomic
from common.keys import sha256_hex
from common.messages import UploadJob

log = logging.getLogger(__name__)


class Spill:
    def __init__(self, directory: Path) -> None:
        self._dir = directory

    def put(self, upload: UploadJob) -> None:
        """Keep `upload` on disk (the same key twice keeps the newer bytes)."""
        write_atomic(self._dir / sha256_hex(upload.key), upload.encode())

    def oldest(self, limit: int) -> list[Path]:
        """Up to `limit` spilled uploads, oldest first (no file being written)."""
        try:
            entries = [e for e in os.scandir(self._dir) if not e.name.startswith(".")]
        except FileNotFoundError:
            return []
        entries.sort(key=lambda entry: entry.stat().st_mtime)
        return [Path(entry.path) for entry in entries[:limit]]

    def count(self) -> int:
        try:
            return sum(1 for e in os.scandir(self._dir) if not e.name.startswith("."))
        except FileNotFoundError:
            return 0

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
