"""Reading an original: refused by its header before any pixel is decoded,
then decoded (shrunk on load where it can be), libvips' errors translated.

JPEG originals are decoded by libjpeg-turbo (simplejpeg) when libvips'
loader would do the same work slower: see `decoded_jpeg`."""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import time
from collections.abc import Iterator

import pyvips
import simplejpeg

from common.errors import (
    DiskFull,
    ImageTooLarge,
    RenderTooSlow,
    ResizeTimeout,
    UnsupportedImage,
)
from common.formats import ANIMATED_FORMATS, LOADERS
from processor.imaging.colour import foreign_profile
from processor.imaging.geometry import Limits, Rendition

log = logging.getLogger(__name__)
# A truncated original is an error (415), not an image padded with grey.
# thumbnail_buffer ignores its own fail_on: it must reach the loader as an option.
FAIL_ON = "truncated"
LOAD_OPTIONS = f"fail_on={FAIL_ON}"
_NO_SPACE = os.strerror(errno.ENOSPC)  # in libvips' message when a write finds a full disk


@contextlib.contextmanager
def translated_errors(limits: Limits) -> Iterator[None]:
    if time.monotonic() > limits.deadline:
        raise ResizeTimeout("the job waited past its deadline before its resize began")
    try:
        yield
    except pyvips.Error as exc:
        if time.monotonic() > limits.deadline:
            raise RenderTooSlow() from exc
        if _NO_SPACE in f"{exc.message} {exc.detail}":  # writing a master: not the image
            log.error("libvips: %s", str(exc.detail).strip() or _first_line(exc))
            raise DiskFull() from exc
        # The client learns what is wrong with the original; the log keeps libvips' words.
        log.info("libvips: %s", _first_line(exc))
        raise UnsupportedImage("the original is truncated or corrupt") from exc


def check_header(original: bytes, limits: Limits) -> pyvips.Image:
    """Refuse by format and by declared size before any pixel is decoded."""
    try:
        header = pyvips.Image.new_from_buffer(original, "", access="sequential")
    except pyvips.Error as exc:
        raise UnsupportedImage("the original is not an image libvips can decode") from exc
    loader = header.get("vips-loader")
    if loader not in {LOADERS[name] for name in limits.formats}:
        raise UnsupportedImage(f"originals of type {loader} are not accepted")
    if header.width * header.height > limits.max_pixels:
        raise ImageTooLarge(
            f"the original is {header.width}x{header.height}, above max_source_pixels"
        )
    if loader == "jpegload_buffer":
        _check_scans(original, limits.max_jpeg_scans)
    return header


def _check_scans(jpeg: bytes, max_scans: int) -> None:
    """Refuse a JPEG of more than `max_scans` scans before any is decoded.

    A progressive JPEG's decoder passes over the whole image once per scan,
    and neither libjpeg-turbo nor libvips' loader can be stopped midway: a
    legal file of 2,647 scans of a flat picture (534 KB, 7000x7000) costs
    about 40 s of CPU. Ordinary progressive files have about ten.
    """
    scans = jpeg_scans(jpeg)
    if max_scans and scans > max_scans:
        raise ImageTooLarge(
            f"the original is a JPEG of {scans} scans, above max_source_jpeg_scans ({max_scans})"
        )


def jpeg_scans(jpeg: bytes) -> int:
    """The scans (SOS markers) of a JPEG: the segments before the first are
    walked; after it, a marker cannot hide in entropy-coded data (an 0xFF
    there is always followed by 0x00 or a restart marker)."""
    pos = 2  # past SOI
    while pos + 4 <= len(jpeg) and jpeg[pos] == 0xFF:
        marker = jpeg[pos + 1]
        if marker == 0xDA:
            return 1 + jpeg.count(b"\xff\xda", pos + 2)
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        pos += 2 + int.from_bytes(jpeg[pos + 2 : pos + 4], "big")
    return jpeg.count(b"\xff\xda")  # not walkable: every candidate counts


def abandon_after(image: pyvips.Image, deadline: float) -> None:
    """Make libvips stop computing `image` once `deadline` has passed."""

    def on_eval(evaluated: pyvips.Image, progress: object) -> None:
        if time.monotonic() > deadline:
            evaluated.set_kill(True)

    image.set_progress(True)
    image.signal_connect("eval", on_eval)


def frames_kept(header: pyvips.Image, rendition: Rendition, limits: Limits) -> int:
    """How many frames the output keeps: an animated GIF or WebP stays animated
    as gif or webp, up to max_frames; anything else takes the first frame."""
    animated = header.get("vips-loader") in ("gifload_buffer", "webpload_buffer")
    if not animated or rendition.format not in ANIMATED_FORMATS:
        return 1
    frames = min(pages(header), limits.max_frames)
    if frames * header.width * header.height > limits.max_pixels:
        raise ImageTooLarge(
            f"{frames} frames of {header.width}x{header.height} are above max_source_pixels"
        )
    return frames


def pages(header: pyvips.Image) -> int:
    return int(header.get("n-pages")) if header.get_typeof("n-pages") != 0 else 1


def upright_size(header: pyvips.Image) -> tuple[int, int]:
    """Width and height once the EXIF orientation is applied."""
    if orientation(header) in (5, 6, 7, 8):  # turned a quarter: sides swap
        return header.height, header.width
    return header.width, header.height


def orientation(header: pyvips.Image) -> int:
    """The EXIF orientation (1: upright already)."""
    return int(header.get("orientation")) if header.get_typeof("orientation") != 0 else 1


def load(original: bytes, header: pyvips.Image, shrink: int = 1, frames: int = 1) -> pyvips.Image:
    """Open `original` (a JPEG may be shrunk on load by its DCT: 1, 2, 4 or 8;
    an animation may keep `frames` frames).

    Turning an image upright reads it out of order: only then random access.
    """
    access = "sequential" if orientation(header) == 1 else "random"
    options = {"shrink": shrink} if shrink > 1 else {}
    if frames > 1:
        options["n"] = frames
    return pyvips.Image.new_from_buffer(original, "", access=access, fail_on=FAIL_ON, **options)


def jpeg_at_least(
    original: bytes, header: pyvips.Image, need_width: int, need_height: int
) -> pyvips.Image:
    """A JPEG `original`, upright, decoded at the largest DCT scale-down (1/2,
    1/4 or 1/8) that keeps at least need_width x need_height (upright)."""
    if orientation(header) in (5, 6, 7, 8):  # stored a quarter turn away
        need_width, need_height = need_height, need_width
    shrink = _dct_shrink(header.width, header.height, need_width, need_height)
    image = decoded_jpeg(original, header, shrink)
    if image is None:
        return load(original, header, shrink).autorot()
    if orientation(header) == 1:
        return image
    image = image.copy()
    image.set_type(pyvips.GValue.gint_type, "orientation", orientation(header))
    return image.autorot()


def decoded_jpeg(original: bytes, header: pyvips.Image, shrink: int) -> pyvips.Image | None:
    """`original` decoded by libjpeg-turbo (simplejpeg) at 1/`shrink` scale, in
    memory; None for a JPEG that needs libvips' loader (CMYK, or a colour
    profile other than sRGB, which libvips applies).

    The same library with the same scaled IDCT, accurate DCT and fancy
    upsampling as libvips' loader, so the same pixels, for about four fifths
    of the CPU on the corpus (bench/TUNING.md). libjpeg-turbo could also
    scale by 3/8, 5/8...: no cheaper here, and the outputs drift from the
    accurate path's (SSIM down to 0.976), so only the scales libvips has.
    """
    grey = header.bands == 1 and header.interpretation == "b-w"
    colour = header.bands == 3 and header.interpretation == "srgb"
    if not (grey or colour) or foreign_profile(header):
        return None
    try:
        pixels = simplejpeg.decode_jpeg(
            original,
            "GRAY" if grey else "RGB",
            min_width=math.ceil(header.width / shrink),
            min_height=math.ceil(header.height / shrink),
        )
    except ValueError as exc:  # strict: a truncated or corrupt original
        log.info("libjpeg-turbo: %s", exc)
        raise UnsupportedImage("the original is truncated or corrupt") from exc
    height, width = pixels.shape[:2]
    image = pyvips.Image.new_from_memory(pixels.data, width, height, header.bands, "uchar")
    image = image.copy(interpretation=header.interpretation)
    # libjpeg rounds a scaled size up (a last, partial pixel); libvips' loader down.
    return image.crop(0, 0, header.width // shrink, header.height // shrink)


def _dct_shrink(width: int, height: int, need_width: int, need_height: int) -> int:
    """The largest JPEG DCT scale-down that keeps at least need_width x need_height."""
    fits = (f for f in (2, 4, 8) if width // f >= need_width and height // f >= need_height)
    return max(fits, default=1)


def shrunk_on_load(original: bytes, header: pyvips.Image, long_side: int) -> pyvips.Image:
    """`original` upright, its long side at least `long_side`, as cheaply as can be.

    A JPEG is decoded at 1/2, 1/4 or 1/8 scale by its DCT (the largest that
    keeps `long_side`) and not resampled further: the master is a step on the
    way, and a lanczos pass here would cost as much again as the decode.
    Other formats go through thumbnail (which shrinks WebP on load too).
    """
    if header.get("vips-loader") == "jpegload_buffer":
        width, height = upright_size(header)
        need = (long_side, 1) if width >= height else (1, long_side)
        return jpeg_at_least(original, header, *need)
    return pyvips.Image.thumbnail_buffer(
        original, long_side, height=long_side, size="down", option_string=LOAD_OPTIONS
    )


def lossless(original: bytes, header: pyvips.Image) -> bool:
    """True for an original stored without loss: PNG, GIF or lossless WebP."""
    loader = header.get("vips-loader")
    if loader in ("pngload_buffer", "gifload_buffer"):
        return True
    # A WebP's first chunk is VP8L when lossless; an extended file (VP8X) lists
    # its chunks, and a lossless one holds a VP8L among the first few.
    return loader == "webpload_buffer" and b"VP8L" in original[12:4096]


def _first_line(exc: pyvips.Error) -> str:
    return str(exc.message).strip().splitlines()[0] if exc.message else "libvips error"
