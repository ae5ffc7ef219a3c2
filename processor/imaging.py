"""Resize and encode with libvips. The only module that imports pyvips."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pyvips

from common.errors import ImageServerError, ImageTooLarge, ResizeTimeout, UnsupportedImage
from common.urls import CONTENT_TYPES, Fit

log = logging.getLogger(__name__)
# allowed_source_formats names -> the libvips loader that reads each.
LOADERS = {
    "jpeg": "jpegload_buffer",
    "png": "pngload_buffer",
    "webp": "webpload_buffer",
    "gif": "gifload_buffer",
    "heif": "heifload_buffer",
    "tiff": "tiffload_buffer",
    "svg": "svgload_buffer",
    "pdf": "pdfload_buffer",
}
# libvips' largest coordinate: as a thumbnail height it means "any height".
_ANY_SIZE = 10_000_000
_KEEP_NO_METADATA = 0  # VIPS_FOREIGN_KEEP_NONE
# A truncated original is an error (415), not an image padded with grey.
# thumbnail_buffer ignores its own fail_on: it must reach the loader as an option.
_FAIL_ON = "truncated"
_LOAD_OPTIONS = f"fail_on={_FAIL_ON}"


def configure(threads: int) -> None:
    """Per-process libvips settings: the processor runs one job at a time and
    every original is new, so libvips' operation cache only costs memory."""
    pyvips.cache_set_max(0)
    pyvips.concurrency_set(threads)


@dataclasses.dataclass(frozen=True)
class Rendition:
    fit: Fit
    width: int | None
    height: int | None
    format: str
    quality: int


@dataclasses.dataclass(frozen=True)
class Limits:
    formats: frozenset[str]  # names from LOADERS
    max_pixels: int
    deadline: float  # time.monotonic() past which the work is abandoned


def render(original: bytes, rendition: Rendition, limits: Limits) -> bytes:
    """Return `original` resized and encoded as `rendition` asks, within `limits`."""
    with _translated_errors(limits):
        header = _check_header(original, limits)
        return _render(_resize_original(original, header, rendition), rendition, limits)


def render_master(master: Path, rendition: Rendition, limits: Limits) -> bytes:
    """Like render, from a master written by make_master (not for full_size)."""
    with _translated_errors(limits):
        return _render(_resize_master(master, rendition), rendition, limits)


def make_master(original: bytes, long_side: int, limits: Limits, path: Path) -> bool:
    """Write a pre-shrunk master of `original` to `path`; False if it is small already.

    The master is upright, 8-bit sRGB, without metadata, its long side
    `long_side` (maximum_width): every width-fit output fits in it, and so do
    most crops (`master_covers` tells). Made with shrink-on-load, it costs
    about what the largest output made straight from the original costs; it
    is libvips' own uncompressed format, memory-mapped when read.
    """
    with _translated_errors(limits):
        header = _check_header(original, limits)
        if max(header.width, header.height) <= long_side:
            return False
        image = _shrunk_on_load(original, header, long_side)
        image = _to_srgb(image)
        _abandon_after(image, limits.deadline)
        # Rebuilt from bare pixels: no profile or orientation of the original
        # survives (libvips' saver adds only a minimal EXIF, orientation 1).
        pixels = pyvips.Image.new_from_memory(
            image.write_to_memory(), image.width, image.height, image.bands, image.format
        ).copy(interpretation=image.interpretation)
        tmp = path.with_name(f".{os.getpid()}-{path.name}")
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels.vipssave(str(tmp))
        os.replace(tmp, path)
        return True


def _shrunk_on_load(original: bytes, header: pyvips.Image, long_side: int) -> pyvips.Image:
    """`original` upright, its long side at least `long_side`, as cheaply as can be.

    A JPEG is decoded at 1/2, 1/4 or 1/8 scale by its DCT (the largest that
    keeps `long_side`) and not resampled further: the master is a step on the
    way, and a lanczos pass here would cost as much again as the decode.
    Other formats go through thumbnail (which shrinks WebP on load too).
    """
    if header.get("vips-loader") == "jpegload_buffer":
        landscape = header.width >= header.height
        need = (long_side, 1) if landscape else (1, long_side)
        return _load(original, header, _dct_shrink(header.width, header.height, *need)).autorot()
    return pyvips.Image.thumbnail_buffer(
        original, long_side, height=long_side, size="down", option_string=_LOAD_OPTIONS
    )


def master_covers(master: Path, rendition: Rendition) -> bool:
    """True when `rendition` is made from `master` by shrinking only: a crop
    taller (or wider) than the master's short side needs the original."""
    if rendition.fit is Fit.NONE:
        return False
    if rendition.fit is Fit.WIDTH:
        return True
    header = pyvips.Image.new_from_file(str(master))  # reads the header only
    assert rendition.width is not None and rendition.height is not None
    return bool(rendition.width <= header.width and rendition.height <= header.height)


@contextlib.contextmanager
def _translated_errors(limits: Limits) -> Iterator[None]:
    if time.monotonic() > limits.deadline:
        raise ResizeTimeout("the job waited past its deadline before its resize began")
    try:
        yield
    except pyvips.Error as exc:
        if time.monotonic() > limits.deadline:
            raise ResizeTimeout("the resize took longer than job_timeout_s") from exc
        # The client learns what is wrong with the original; the log keeps libvips' words.
        log.info("libvips: %s", _first_line(exc))
        raise UnsupportedImage("the original is truncated or corrupt") from exc


def _render(image: pyvips.Image, rendition: Rendition, limits: Limits) -> bytes:
    image = _to_srgb(image)
    if rendition.format == "jpg" and image.hasalpha():
        image = image.flatten(background=[255])
    _abandon_after(image, limits.deadline)
    return _encode(image, rendition)


def _check_header(original: bytes, limits: Limits) -> pyvips.Image:
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
    return header


def _abandon_after(image: pyvips.Image, deadline: float) -> None:
    """Make libvips stop computing `image` once `deadline` has passed."""

    def on_eval(evaluated: pyvips.Image, progress: object) -> None:
        if time.monotonic() > deadline:
            evaluated.set_kill(True)

    image.set_progress(True)
    image.signal_connect("eval", on_eval)


def _resize_original(original: bytes, header: pyvips.Image, rendition: Rendition) -> pyvips.Image:
    if rendition.fit is Fit.NONE:
        return _load(original, header).autorot()
    if header.get("vips-loader") == "jpegload_buffer":
        # Our own shrink-on-load (see _jpeg_shrink), then thumbnail's resize and crop.
        image = _load(original, header, _jpeg_shrink(header, rendition))
        return _thumbnail(image.thumbnail_image, rendition)
    return _thumbnail(
        functools.partial(pyvips.Image.thumbnail_buffer, original, option_string=_LOAD_OPTIONS),
        rendition,
    )


def _resize_master(master: Path, rendition: Rendition) -> pyvips.Image:
    assert rendition.fit is not Fit.NONE, "full_size is made from the original"
    return _thumbnail(functools.partial(pyvips.Image.thumbnail, str(master)), rendition)


def _thumbnail(thumbnail: Callable[..., pyvips.Image], rendition: Rendition) -> pyvips.Image:
    assert rendition.width is not None
    if rendition.fit is Fit.WIDTH:
        # size="down": never upscale past the original.
        return thumbnail(rendition.width, height=_ANY_SIZE, size="down")
    return thumbnail(rendition.width, height=rendition.height, crop="centre", size="both")


def _orientation(header: pyvips.Image) -> int:
    """The EXIF orientation (1: upright already)."""
    return int(header.get("orientation")) if header.get_typeof("orientation") != 0 else 1


def _load(original: bytes, header: pyvips.Image, shrink: int = 1) -> pyvips.Image:
    """Open `original` (a JPEG may be shrunk on load by its DCT: 1, 2, 4 or 8).

    Turning an image upright reads it out of order: only then random access.
    """
    access = "sequential" if _orientation(header) == 1 else "random"
    options = {"shrink": shrink} if shrink > 1 else {}
    return pyvips.Image.new_from_buffer(original, "", access=access, fail_on=_FAIL_ON, **options)


def _dct_shrink(width: int, height: int, need_width: int, need_height: int) -> int:
    """The largest JPEG DCT scale-down that keeps at least need_width x need_height."""
    return max(f for f in (1, 2, 4, 8) if width // f >= need_width and height // f >= need_height)


def _jpeg_shrink(header: pyvips.Image, rendition: Rendition) -> int:
    """The largest DCT scale-down (1, 2, 4 or 8) whose image still covers the output.

    libvips' thumbnail keeps a factor of two above the output for its own
    resampling, so a 2560-px JPEG asked at 1000 px is decoded whole; decoding
    at 1/2 (1280 px) and resampling from there is what Pillow's draft mode
    (thumbor) and imgproxy do, and costs about half. Masters are compared
    with Pillow's Lanczos in the tests.
    """
    width, height = header.width, header.height
    if _orientation(header) in (5, 6, 7, 8):  # turned a quarter: sides swap
        width, height = height, width
    assert rendition.width is not None
    if rendition.fit is Fit.WIDTH:
        need_width, need_height = min(rendition.width, width), 1
    else:
        assert rendition.height is not None
        scale = max(rendition.width / width, rendition.height / height)
        need_width, need_height = math.ceil(width * scale), math.ceil(height * scale)
    return _dct_shrink(width, height, need_width, need_height)


def _foreign_profile(image: pyvips.Image) -> bool:
    """True when the image carries an ICC profile other than sRGB IEC61966-2.1.

    Most photographs embed that very profile: their pixels are sRGB already, and
    transforming them through it costs a third of a resize (lcms builds the
    transform each time) for nothing. The ICC header names it: device
    manufacturer "IEC ", model "sRGB" (bytes 48-55).
    """
    if image.get_typeof("icc-profile-data") == 0:
        return False
    profile = image.get("icc-profile-data")
    return bytes(profile[48:56]) != b"IEC sRGB"


def _to_srgb(image: pyvips.Image) -> pyvips.Image:
    if image.interpretation == "cmyk" or _foreign_profile(image):
        image = image.icc_transform("srgb", embedded=True, intent="perceptual")
    if image.interpretation in ("b-w", "grey16"):
        target = "b-w"
    else:
        target = "srgb"
    if image.interpretation != target or image.format != "uchar":
        image = image.colourspace(target)
    return image.cast("uchar") if image.format != "uchar" else image


def _encode(image: pyvips.Image, rendition: Rendition) -> bytes:
    fmt, quality = rendition.format, rendition.quality
    data: bytes
    if fmt == "jpg":
        data = image.jpegsave_buffer(Q=quality, optimize_coding=True, keep=_KEEP_NO_METADATA)
    elif fmt == "png":
        data = image.pngsave_buffer(compression=6, keep=_KEEP_NO_METADATA)
    elif fmt == "webp":
        data = image.webpsave_buffer(Q=quality, keep=_KEEP_NO_METADATA)
    elif fmt == "gif":
        data = image.gifsave_buffer(keep=_KEEP_NO_METADATA)
    elif fmt == "avif":
        data = image.heifsave_buffer(Q=quality, compression="av1", keep=_KEEP_NO_METADATA)
    else:
        raise ImageServerError(f"no encoder for {fmt!r}; known: {sorted(CONTENT_TYPES)}")
    return data


def _first_line(exc: pyvips.Error) -> str:
    return str(exc.message).strip().splitlines()[0] if exc.message else "libvips error"
