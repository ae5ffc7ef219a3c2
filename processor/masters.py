"""Pre-shrunk masters: every output but full_size is made from one, not from the original.

A master is made once per original (long side maximum_width, upright, sRGB,
libvips' own format on disk) when a second size of it is asked; every further
size of that image is then a resize of at most maximum_width² pixels instead
of a decode of the original. When each is made and used is the render plan's
choice (processor/render.py); this module keeps them on the host's disk.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from common import keys
from common.errors import ResizeTimeout
from common.file_index import FileIndex
from common.files import KeyLock, touch
from common.settings import Settings
from processor import imaging


class MasterStore:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._long_side = settings.maximum_width
        self._index = FileIndex(keys.masters_dir(settings))  # what the janitor evicts from

    def path(self, source_url: str) -> Path:
        return keys.master_path(self._settings, source_url)

    def made(self, source_url: str) -> bool:
        return self.path(source_url).exists()

    def existing(self, source_url: str) -> Path | None:
        """The master of `source_url` if it is made (marked as used for the janitor)."""
        path = self.path(source_url)
        try:
            touch(path, os.stat(path))
        except FileNotFoundError:
            return None
        return path

    @contextlib.contextmanager
    def locked(self, source_url: str, deadline: float) -> Iterator[None]:
        """Held while the master of `source_url` may be made: by one job of this host at a time."""
        lock = KeyLock(keys.masters_dir(self._settings) / ".locks", source_url)
        if not lock.acquire_before(deadline):
            raise ResizeTimeout("waited too long for the master of this original")
        try:
            yield
        finally:
            lock.release()

    def make(self, source_url: str, original: bytes, limits: imaging.Limits) -> bool:
        """Make the master of `source_url` from `original` (libvips work: on the
        resize thread); False when the original is no larger than a master would be."""
        path = self.path(source_url)
        made = imaging.make_master(original, self._long_side, limits, path)
        if made:
            with contextlib.suppress(FileNotFoundError):  # evicted at once
                self._index.added(path, path.stat().st_size)
        return made
