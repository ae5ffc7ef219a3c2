"""Masters: an original pre-shrunk once, in libvips' own format (memory-mapped
when read), that most outputs of its image are then made from."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pyvips

from common.files import raise_if_no_space
from processor.imaging.colour import to_srgb
from processor.imaging.decode import (
    abandon_after,
    check_header,
    lossless,
    pages,
    shrunk_on_load,
    translated_errors,
    upright_size,
)
from processor.imaging.geometry import Limits

# What a master remembers of its original (libvips keeps these fields in its file).
_MASTER_WIDTH = "image-server-original-width"
_MASTER_HEIGHT = "image-server-original-height"
_MASTER_LOSSLESS = "image-server-original-lossless"


@dataclasses.dataclass(frozen=True)
class MasterSource:
    width: int  # upright
    height: int
    lossless: bool


def make_master(original: bytes, long_side: int, limits: Limits, path: Path) -> bool:
    """Write a pre-shrunk master of `original` to `path`; False if it is small already.

    The master is upright, 8-bit sRGB, without metadata but the original's
    upright size and whether it was lossless (outputs keep the geometry they
    would have from the original), its long side at least `long_side`
    (maximum_width): most outputs are shrunk from it (`render_master` tells
    which: a portrait's w1000 needs more pixels than its master has). Made
    with shrink-on-load, it costs about what the largest output made straight
    from the original costs; it is libvips' own uncompressed format,
    memory-mapped when read.
    """
    with translated_errors(limits):
        header = check_header(original, limits)
        if max(header.width, header.height) <= long_side or pages(header) > 1:
            return False  # small already, or an animation (outputs may keep its frames)
        width, height = upright_size(header)
        image = shrunk_on_load(original, header, long_side)
        image = to_srgb(image)
        abandon_after(image, limits.deadline)
        # Rebuilt from bare pixels: no profile or orientation of the original
        # survives (libvips' saver adds only a minimal EXIF, orientation 1).
        pixels = pyvips.Image.new_from_memory(
            image.write_to_memory(), image.width, image.height, image.bands, image.format
        ).copy(interpretation=image.interpretation)
        pixels.set_type(pyvips.GValue.gint_type, _MASTER_WIDTH, width)
        pixels.set_type(pyvips.GValue.gint_type, _MASTER_HEIGHT, height)
        pixels.set_type(pyvips.GValue.gint_type, _MASTER_LOSSLESS, int(lossless(original, header)))
        tmp = path.with_name(f".{os.getpid()}-{path.name}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise_if_no_space(exc, path)
            raise
        try:
            pixels.vipssave(str(tmp))
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)  # a write that failed midway (a full disk) leaves none
        return True


def open_master(master: Path) -> tuple[pyvips.Image, MasterSource] | None:
    """The master and what it remembers of its original; None when it is gone,
    or is an older master that does not remember."""
    try:
        image = pyvips.Image.new_from_file(str(master))  # the header; pixels when used
    except pyvips.Error:
        if master.exists():
            raise
        return None  # evicted between the caller's look and now
    if image.get_typeof(_MASTER_WIDTH) == 0:
        return None
    source = MasterSource(
        int(image.get(_MASTER_WIDTH)),
        int(image.get(_MASTER_HEIGHT)),
        bool(image.get(_MASTER_LOSSLESS)),
    )
    return image, source
