"""Pre-shrunk masters: every output but full_size is made from one, not from the original.

A master is made once per original (short side maximum_width, upright,
sRGB, libvips' own format on disk) when a second size of it is asked; every
further size of that image is then a resize of about a megapixel instead of
a decode of the original. The first size is made straight from the original.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from common.config import Settings
from common.files import KeyLock
from processor import imaging


class MasterStore:
    def __init__(self, settings: Settings) -> None:
        self._dir = settings.originals_dir / "masters"
        self._short_side = settings.maximum_width

    def path(self, source_url: str) -> Path:
        digest = hashlib.sha256(source_url.encode()).hexdigest()
        return self._dir / digest[:2] / f"{digest}.v"

    def render(
        self,
        source_url: str,
        original: bytes,
        rendition: imaging.Rendition,
        limits: imaging.Limits,
    ) -> bytes:
        """`rendition` from the master of `original`, made now if needed; straight
        from the original when it is no larger than a master would be."""
        path = self.path(source_url)
        with KeyLock(self._dir / ".locks", source_url):
            made = path.exists() or imaging.make_master(original, self._short_side, limits, path)
        if made:
            return imaging.render_master(path, rendition, limits)
        return imaging.render(original, rendition, limits)
