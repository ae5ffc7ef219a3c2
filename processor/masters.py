"""Pre-shrunk masters: every output but full_size is made from one, not from the original.

A master is made once per original (long side maximum_width, upright, sRGB,
libvips' own format on disk) when a second size of it is asked; every further
size of that image is then a resize of at most maximum_width² pixels instead
of a decode of the original. The first size is made straight from the
original, and so is any output that needs more pixels than the master has
(a tall crop; a portrait's largest widths).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import keys
from common.config import Settings
from common.errors import ResizeTimeout
from common.files import KeyLock, touch
from processor import imaging


class MasterStore:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._long_side = settings.maximum_width

    def path(self, source_url: str) -> Path:
        return keys.master_path(self._settings, source_url)

    def existing(self, source_url: str) -> Path | None:
        """The master of `source_url` if it is made (marked as used for the janitor)."""
        path = self.path(source_url)
        try:
            touch(path, os.stat(path))
        except FileNotFoundError:
            return None
        return path

    def render(
        self,
        source_url: str,
        original: bytes,
        rendition: imaging.Rendition,
        limits: imaging.Limits,
        on_resize_thread: Callable[[Callable[[], Any]], Any],
    ) -> bytes:
        """`rendition` from the master of `original`, made now if needed; straight
        from the original when it is no larger than a master would be, or when
        the output needs more pixels than the master has.

        libvips work goes through `on_resize_thread`; waiting for another job
        that is making the same master happens here, on the caller's thread, so
        that the resize thread never sits idle behind a lock.
        """
        path = self.path(source_url)
        lock = KeyLock(keys.masters_dir(self._settings) / ".locks", source_url)
        if not lock.acquire_before(limits.deadline):
            raise ResizeTimeout("waited too long for the master of this original")
        try:
            made = path.exists() or on_resize_thread(lambda: self._make(path, original, limits))
        finally:
            lock.release()
        return self._from_master(path, made, original, rendition, limits, on_resize_thread)

    def make_and_render(
        self, source_url: str, original: bytes, rendition: imaging.Rendition, limits: imaging.Limits
    ) -> bytes:
        """Like render, all on the calling thread, for the job that has just
        downloaded `original` (its lock keeps any other job of this host from
        reading the original, hence from making this master, meanwhile)."""
        path = self.path(source_url)
        made = self._make(path, original, limits)
        return self._from_master(path, made, original, rendition, limits, _here)

    def _make(self, path: Path, original: bytes, limits: imaging.Limits) -> bool:
        return imaging.make_master(original, self._long_side, limits, path)

    def _from_master(
        self,
        path: Path,
        made: bool,
        original: bytes,
        rendition: imaging.Rendition,
        limits: imaging.Limits,
        run: Callable[[Callable[[], Any]], Any],
    ) -> bytes:
        if made:
            output = run(lambda: imaging.render_master(path, rendition, limits))
            if output is not None:  # None: too small for this output, or evicted meanwhile
                return bytes(output)
        return bytes(run(lambda: imaging.render(original, rendition, limits)))


def _here(work: Callable[[], Any]) -> Any:
    return work()
