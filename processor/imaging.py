"""Resize and encode with libvips. The only module that imports pyvips.

JPEG originals are decoded by libjpeg-turbo (simplejpeg) when libvips'
loader would do the same work slower: see `_decoded_jpeg`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pyvips
import simplejpeg

from common.errors import (
    DiskFull,
    ImageServerError,
    ImageTooLarge,
    OutputTooLarge,
    RenderTooSlow,
    ResizeTimeout,
    UnsupportedImage,
)
from common.files import raise_if_no_space
from common.formats import ANIMATED_FORMATS, CONTENT_TYPES, LOADERS, TARGETED_FORMATS
from common.urls import Fit, Gravity, pad_colour

log = logging.getLogger(__name__)
_KEEP_NO_METADATA = 0  # VIPS_FOREIGN_KEEP_NONE
# A truncated original is an error (415), not an image padded with grey.
# thumbnail_buffer ignores its own fail_on: it must reach the loader as an option.
_FAIL_ON = "truncated"
_NO_SPACE = os.strerror(errno.ENOSPC)  # in libvips' message when a write finds a full disk
_LOAD_OPTIONS = f"fail_on={_FAIL_ON}"


def configure(threads: int) -> None:
    """Per-process libvips settings: the processor runs one job at a time and
    every original is new, so libvips' operation cache only costs memory."""
    pyvips.cache_set_max(0)
    pyvips.concurrency_set(threads)


@dataclasses.dataclass(frozen=True)
class Encoding:
    """Encoder settings beyond quality, from config (see README, "Formats and quality")."""

    jpeg_progressive: bool = False
    jpeg_trellis: bool = False  # mozjpeg's trellis quantisation, optimised scans, table 3
    webp_effort: int = 4  # 0-6
    avif_effort: int = 2  # 0-9
    png_compression: int = 6  # zlib level 0-9
    png_palette: bool = False  # quantise to 256 colours (libimagequant)
    webp_lossless_sources: bool = False  # a lossless original gives a lossless WebP


@dataclasses.dataclass(frozen=True)
class Rendition:
    fit: Fit
    width: int | None
    height: int | None
    format: str
    quality: int
    encoding: Encoding = Encoding()
    enlarge: bool = False  # w, h, -fit, -pad may scale up past the original, as ImageMagick does
    quality_target: float = 0.0  # > 0: the lowest quality keeping this SSIM (jpg, webp)
    gravity: Gravity = Gravity.CENTRE  # where a cover crop is anchored
    background: str = ""  # a -pad output's colour (urls.pad_colour)


@dataclasses.dataclass(frozen=True)
class Geometry:
    """Where an output comes from: the upright original scaled to exactly
    resize_width x resize_height (each axis on its own, as ImageMagick and
    Pillow map a whole image onto a whole image), then the width x height box
    at left, top of that taken: a crop, or, where the box reaches past the
    image (-pad), the image placed in the box on its background, as
    ImageMagick's -extent does."""

    resize_width: int
    resize_height: int
    left: int
    top: int
    width: int
    height: int


def geometry(width: int, height: int, rendition: Rendition) -> Geometry:
    """The geometry ImageMagick gives an upright `width` x `height` original:
    `-resize W` for w<W> (its height rounded), `-resize xH` for h<H> (`-resize
    WxH` once the width would pass W, maximum_width), `-resize WxH` for -fit,
    `-resize WxH` then `-gravity center -extent WxH` for -pad, `-resize WxH^`
    then `-gravity <g> -extent WxH` for the other boxes (smart: the box's size;
    where it is comes from the pixels). w, h, -fit and -pad do not scale up
    unless `enlarge` is set."""
    fit = rendition.fit
    assert fit is not Fit.NONE
    if fit is Fit.WIDTH:
        assert rendition.width is not None
        return _scaled(width, height, rendition.width / width, rendition.enlarge)
    if fit is Fit.HEIGHT:
        assert rendition.height is not None
        scale = rendition.height / height
        if rendition.width is not None:  # no wider than maximum_width
            scale = min(scale, rendition.width / width)
        return _scaled(width, height, scale, rendition.enlarge)
    assert rendition.width is not None and rendition.height is not None
    box_width, box_height = rendition.width, rendition.height
    if fit is Fit.COVER:
        scale = max(box_width / width, box_height / height)
        resize_width = max(box_width, math.floor(width * scale + 0.5))
        resize_height = max(box_height, math.floor(height * scale + 0.5))
    else:
        inside = _scaled(
            width, height, min(box_width / width, box_height / height), rendition.enlarge
        )
        if fit is Fit.INSIDE:
            return inside
        resize_width = min(box_width, inside.resize_width)
        resize_height = min(box_height, inside.resize_height)
    left, top = _anchored(resize_width, resize_height, box_width, box_height, rendition.gravity)
    return Geometry(resize_width, resize_height, left, top, box_width, box_height)


def _scaled(width: int, height: int, scale: float, enlarge: bool) -> Geometry:
    """The whole original scaled by `scale` (not past 1 unless `enlarge`), uncropped."""
    if scale >= 1 and not enlarge:
        return Geometry(width, height, 0, 0, width, height)
    out_width = max(1, math.floor(width * scale + 0.5))
    out_height = max(1, math.floor(height * scale + 0.5))
    return Geometry(out_width, out_height, 0, 0, out_width, out_height)


def _anchored(
    width: int, height: int, box_width: int, box_height: int, gravity: Gravity
) -> tuple[int, int]:
    """Where the box's top left corner falls on a `width` x `height` image (negative
    where the image is smaller: it is placed inside the box), as ImageMagick's
    -gravity places an -extent."""
    side = "" if gravity in (Gravity.CENTRE, Gravity.SMART) else gravity.value  # n, se...
    left = 0 if "w" in side else width - box_width if "e" in side else width // 2 - box_width // 2
    top = (
        0 if "n" in side else height - box_height if "s" in side else height // 2 - box_height // 2
    )
    return left, top


def _output_size(width: int, height: int, rendition: Rendition) -> tuple[int, int]:
    """The size of one frame of the output from an upright `width` x `height` original."""
    if rendition.fit is Fit.NONE:
        return width, height
    place = geometry(width, height, rendition)
    return place.width, place.height


def _check_output_pixels(
    width: int, height: int, frames: int, rendition: Rendition, limits: Limits
) -> None:
    pixels = width * height * frames
    if limits.max_output_pixels and pixels > limits.max_output_pixels:
        kept = f" x {frames} frames" if frames > 1 else ""
        raise OutputTooLarge(
            f"the output would be {width}x{height}{kept} = {pixels} pixels, above "
            f"max_output_pixels.{rendition.format} ({limits.max_output_pixels})"
        )


@dataclasses.dataclass(frozen=True)
class Limits:
    formats: frozenset[str]  # names from LOADERS
    max_pixels: int  # of one frame, and of every frame an output keeps
    deadline: float  # time.monotonic() past which the work is abandoned
    max_frames: int = 100  # frames an animated output keeps at most
    # Of the output: width x height x frames kept, before any decode (0: no bound).
    # Bounds what one encode costs: the AVIF and WebP encoders cannot be stopped
    # midway, so a deadline alone does not hold for them.
    max_output_pixels: int = 0
    # Scans of a progressive JPEG (0: no bound): each one is a pass over the whole
    # image, in a codec that cannot be stopped midway (see _check_scans).
    max_jpeg_scans: int = 0


def render(original: bytes, rendition: Rendition, limits: Limits) -> bytes:
    """Return `original` resized and encoded as `rendition` asks, within `limits`."""
    with _translated_errors(limits):
        header = _check_header(original, limits)
        frames = _frames(header, rendition, limits)
        width, height = _output_size(*_upright_size(header), rendition)
        _check_output_pixels(width, height, frames, rendition, limits)
        image = _resize_original(original, header, rendition, frames)
        return _render(image, rendition, limits, _lossless(original, header))


def render_master(master: Path, rendition: Rendition, limits: Limits) -> bytes | None:
    """Like render, from a master written by make_master; None when the master
    cannot make this output: full_size, an output that needs more pixels than
    the master has (a portrait's w1000), or a master that is gone (the janitor
    may evict it at any time). The caller then renders from the original."""
    if rendition.fit is Fit.NONE:
        return None
    with _translated_errors(limits):
        opened = _open_master(master)
        if opened is None:
            return None
        image, source = opened
        place = geometry(source.width, source.height, rendition)
        if place.resize_width > image.width or place.resize_height > image.height:
            return None
        _check_output_pixels(place.width, place.height, 1, rendition, limits)
        # Resized from the image opened above: a master removed from now on is
        # still read whole (its pages stay mapped until they are released).
        image = image.thumbnail_image(place.resize_width, height=place.resize_height, size="force")
        return _render(_place(image, place, rendition), rendition, limits, source.lossless)


# What a master remembers of its original (libvips keeps these fields in its file).
_MASTER_WIDTH = "image-server-original-width"
_MASTER_HEIGHT = "image-server-original-height"
_MASTER_LOSSLESS = "image-server-original-lossless"


@dataclasses.dataclass(frozen=True)
class _MasterSource:
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
    with _translated_errors(limits):
        header = _check_header(original, limits)
        if max(header.width, header.height) <= long_side or _pages(header) > 1:
            return False  # small already, or an animation (outputs may keep its frames)
        width, height = _upright_size(header)
        image = _shrunk_on_load(original, header, long_side)
        image = _to_srgb(image)
        _abandon_after(image, limits.deadline)
        # Rebuilt from bare pixels: no profile or orientation of the original
        # survives (libvips' saver adds only a minimal EXIF, orientation 1).
        pixels = pyvips.Image.new_from_memory(
            image.write_to_memory(), image.width, image.height, image.bands, image.format
        ).copy(interpretation=image.interpretation)
        pixels.set_type(pyvips.GValue.gint_type, _MASTER_WIDTH, width)
        pixels.set_type(pyvips.GValue.gint_type, _MASTER_HEIGHT, height)
        pixels.set_type(pyvips.GValue.gint_type, _MASTER_LOSSLESS, int(_lossless(original, header)))
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


def _shrunk_on_load(original: bytes, header: pyvips.Image, long_side: int) -> pyvips.Image:
    """`original` upright, its long side at least `long_side`, as cheaply as can be.

    A JPEG is decoded at 1/2, 1/4 or 1/8 scale by its DCT (the largest that
    keeps `long_side`) and not resampled further: the master is a step on the
    way, and a lanczos pass here would cost as much again as the decode.
    Other formats go through thumbnail (which shrinks WebP on load too).
    """
    if header.get("vips-loader") == "jpegload_buffer":
        width, height = _upright_size(header)
        need = (long_side, 1) if width >= height else (1, long_side)
        return _jpeg_at_least(original, header, *need)
    return pyvips.Image.thumbnail_buffer(
        original, long_side, height=long_side, size="down", option_string=_LOAD_OPTIONS
    )


def _open_master(master: Path) -> tuple[pyvips.Image, _MasterSource] | None:
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
    source = _MasterSource(
        int(image.get(_MASTER_WIDTH)),
        int(image.get(_MASTER_HEIGHT)),
        bool(image.get(_MASTER_LOSSLESS)),
    )
    return image, source


@contextlib.contextmanager
def _translated_errors(limits: Limits) -> Iterator[None]:
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


def _render(image: pyvips.Image, rendition: Rendition, limits: Limits, lossless: bool) -> bytes:
    image = _to_srgb(image)
    if rendition.format == "jpg" and image.hasalpha():
        image = image.flatten(background=[255])
    _abandon_after(image, limits.deadline)
    return _encode(image, rendition, lossless)


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


def _abandon_after(image: pyvips.Image, deadline: float) -> None:
    """Make libvips stop computing `image` once `deadline` has passed."""

    def on_eval(evaluated: pyvips.Image, progress: object) -> None:
        if time.monotonic() > deadline:
            evaluated.set_kill(True)

    image.set_progress(True)
    image.signal_connect("eval", on_eval)


def _frames(header: pyvips.Image, rendition: Rendition, limits: Limits) -> int:
    """How many frames the output keeps: an animated GIF or WebP stays animated
    as gif or webp, up to max_frames; anything else takes the first frame."""
    animated = header.get("vips-loader") in ("gifload_buffer", "webpload_buffer")
    if not animated or rendition.format not in ANIMATED_FORMATS:
        return 1
    frames = min(_pages(header), limits.max_frames)
    if frames * header.width * header.height > limits.max_pixels:
        raise ImageTooLarge(
            f"{frames} frames of {header.width}x{header.height} are above max_source_pixels"
        )
    return frames


def _resize_original(
    original: bytes, header: pyvips.Image, rendition: Rendition, frames: int
) -> pyvips.Image:
    if rendition.fit is Fit.NONE:
        return _load(original, header, frames=frames).autorot()
    width, height = _upright_size(header)
    place = geometry(width, height, rendition)
    size = {"height": place.resize_height, "size": "force"}
    if header.get("vips-loader") == "jpegload_buffer":
        # Shrink-on-load by the largest DCT scale that still covers the output:
        # libvips' thumbnail keeps a factor of two above the output for its own
        # resampling, so a 2560-px JPEG asked at 1000 px would be decoded whole;
        # decoding at 1/2 and resampling from there is what Pillow's draft mode
        # (thumbor) and imgproxy do, and costs about half.
        image = _jpeg_at_least(original, header, place.resize_width, place.resize_height)
        image = image.thumbnail_image(place.resize_width, **size)
    else:
        # An animation is resized frame by frame (`height` is a frame's).
        options = f"{_LOAD_OPTIONS},n={frames}" if frames > 1 else _LOAD_OPTIONS
        image = pyvips.Image.thumbnail_buffer(
            original, place.resize_width, option_string=options, **size
        )
    return _place(image, place, rendition)


def _place(image: pyvips.Image, place: Geometry, rendition: Rendition) -> pyvips.Image:
    """The box of `place` from every frame of `image` (resized already): cropped,
    or padded to it (-pad); a smart crop's box goes where libvips' attention
    puts it (an animation's: its centre, the same for every frame)."""
    frame_height = _frame_height(image)
    if (image.width, frame_height) == (place.width, place.height):
        return image
    count = image.height // frame_height
    if rendition.gravity is Gravity.SMART and count == 1:
        # Attention reads the image out of order: from memory (it is resized already).
        return image.copy_memory().smartcrop(place.width, place.height, interesting="attention")
    if rendition.fit is Fit.PAD:
        image, background = _with_background(image, rendition)
        frames = [
            image.crop(0, index * frame_height, image.width, frame_height).embed(
                -place.left,
                -place.top,
                place.width,
                place.height,
                extend="background",
                background=background,
            )  # fmt: skip
            for index in range(count)
        ]
    else:
        frames = [
            image.crop(place.left, index * frame_height + place.top, place.width, place.height)
            for index in range(count)
        ]
    if len(frames) == 1:
        return frames[0]
    placed = pyvips.Image.arrayjoin(frames, across=1).copy()
    placed.set_type(pyvips.GValue.gint_type, "page-height", place.height)
    return placed


def _with_background(image: pyvips.Image, rendition: Rendition) -> tuple[pyvips.Image, list[int]]:
    """`image` in sRGB, with an alpha band when it is padded with transparency,
    and the background to pad it with (one value per band)."""
    image = _to_srgb(image)
    if image.interpretation == "b-w":
        image = image.colourspace("srgb")
    colour = pad_colour(rendition.format, rendition.background)
    if colour is None:
        with_alpha = image if image.hasalpha() else image.bandjoin(255)
        return with_alpha, [0, 0, 0, 0]
    rgb = [int(colour[i : i + 2], 16) for i in (0, 2, 4)]
    return image, rgb + [255] if image.hasalpha() else rgb


def _frame_height(image: pyvips.Image) -> int:
    """The height of one frame of an animation (of the whole image otherwise)."""
    if image.get_typeof("page-height") == 0:
        return int(image.height)
    return int(image.get("page-height"))


def _pages(header: pyvips.Image) -> int:
    return int(header.get("n-pages")) if header.get_typeof("n-pages") != 0 else 1


def _upright_size(header: pyvips.Image) -> tuple[int, int]:
    """Width and height once the EXIF orientation is applied."""
    if _orientation(header) in (5, 6, 7, 8):  # turned a quarter: sides swap
        return header.height, header.width
    return header.width, header.height


def _orientation(header: pyvips.Image) -> int:
    """The EXIF orientation (1: upright already)."""
    return int(header.get("orientation")) if header.get_typeof("orientation") != 0 else 1


def _load(original: bytes, header: pyvips.Image, shrink: int = 1, frames: int = 1) -> pyvips.Image:
    """Open `original` (a JPEG may be shrunk on load by its DCT: 1, 2, 4 or 8;
    an animation may keep `frames` frames).

    Turning an image upright reads it out of order: only then random access.
    """
    access = "sequential" if _orientation(header) == 1 else "random"
    options = {"shrink": shrink} if shrink > 1 else {}
    if frames > 1:
        options["n"] = frames
    return pyvips.Image.new_from_buffer(original, "", access=access, fail_on=_FAIL_ON, **options)


def _jpeg_at_least(
    original: bytes, header: pyvips.Image, need_width: int, need_height: int
) -> pyvips.Image:
    """A JPEG `original`, upright, decoded at the largest DCT scale-down (1/2,
    1/4 or 1/8) that keeps at least need_width x need_height (upright)."""
    if _orientation(header) in (5, 6, 7, 8):  # stored a quarter turn away
        need_width, need_height = need_height, need_width
    shrink = _dct_shrink(header.width, header.height, need_width, need_height)
    image = _decoded_jpeg(original, header, shrink)
    if image is None:
        return _load(original, header, shrink).autorot()
    if _orientation(header) == 1:
        return image
    image = image.copy()
    image.set_type(pyvips.GValue.gint_type, "orientation", _orientation(header))
    return image.autorot()


def _decoded_jpeg(original: bytes, header: pyvips.Image, shrink: int) -> pyvips.Image | None:
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
    if not (grey or colour) or _foreign_profile(header):
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


def _lossless(original: bytes, header: pyvips.Image) -> bool:
    """True for an original stored without loss: PNG, GIF or lossless WebP."""
    loader = header.get("vips-loader")
    if loader in ("pngload_buffer", "gifload_buffer"):
        return True
    # A WebP's first chunk is VP8L when lossless; an extended file (VP8X) lists
    # its chunks, and a lossless one holds a VP8L among the first few.
    return loader == "webpload_buffer" and b"VP8L" in original[12:4096]


def _encode(image: pyvips.Image, rendition: Rendition, lossless: bool) -> bytes:
    lossless_webp = lossless and rendition.encoding.webp_lossless_sources
    targeted = rendition.quality_target > 0 and rendition.format in TARGETED_FORMATS
    targeted = targeted and not (rendition.format == "webp" and lossless_webp)
    if targeted:
        image = image.copy_memory()  # resized once, encoded several times
    encode = _encoder(image, rendition, lossless)
    if targeted:
        return _lowest_quality_keeping(image, encode, rendition.quality_target)
    return encode(rendition.quality)


# Per-image quality: the qualities tried, and the SSIM constants of Wang et al.
_TARGET_QUALITIES = list(range(30, 96, 5))
_C1, _C2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2


def _lowest_quality_keeping(
    image: pyvips.Image, encode: Callable[[int], bytes], target: float
) -> bytes:
    """The output at the lowest quality of _TARGET_QUALITIES whose SSIM against
    `image` (the resized picture before encoding) is at least `target`: a
    bisection of at most 4 encodes, and 95 when none reaches it. Easy pictures
    get small files, detailed ones keep their detail."""
    reference = _luma(image)
    low, high = 0, len(_TARGET_QUALITIES) - 1
    best = None
    while low <= high:
        middle = (low + high) // 2
        data = encode(_TARGET_QUALITIES[middle])
        if _ssim(reference, _luma(pyvips.Image.new_from_buffer(data, ""))) >= target:
            best, high = data, middle - 1
        else:
            low = middle + 1
    return best if best is not None else encode(_TARGET_QUALITIES[-1])


def _luma(image: pyvips.Image) -> pyvips.Image:
    if image.hasalpha():
        image = image.flatten(background=[255] * (image.bands - 1))
    return image.colourspace("b-w")[0].cast("float").copy_memory()


def _ssim(x: pyvips.Image, y: pyvips.Image) -> float:
    """Mean SSIM of two luma planes (Gaussian window, sigma 1.5)."""

    def blur(plane: pyvips.Image) -> pyvips.Image:
        return plane.gaussblur(1.5, min_ampl=0.01, precision="float")

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x * mu_x
    var_y = blur(y * y) - mu_y * mu_y
    cov = blur(x * y) - mu_x * mu_y
    numerator = (mu_x * mu_y * 2 + _C1) * (cov * 2 + _C2)
    denominator = (mu_x * mu_x + mu_y * mu_y + _C1) * (var_x + var_y + _C2)
    return float((numerator / denominator).avg())


def _encoder(image: pyvips.Image, rendition: Rendition, lossless: bool) -> Callable[[int], bytes]:
    """A function that encodes `image` as `rendition.format` at a given quality."""
    fmt, encoding, keep = rendition.format, rendition.encoding, _KEEP_NO_METADATA
    if fmt == "jpg":
        # Chroma subsampling by quality: 4:2:0 below Q90, none from Q90 (libvips' auto).
        trellis = encoding.jpeg_trellis
        return lambda quality: image.jpegsave_buffer(
            Q=quality,
            optimize_coding=True,
            interlace=encoding.jpeg_progressive,
            trellis_quant=trellis,
            overshoot_deringing=trellis,
            optimize_scans=trellis and encoding.jpeg_progressive,
            quant_table=3 if trellis else 0,
            keep=keep,
        )
    if fmt == "png":
        return lambda quality: image.pngsave_buffer(
            compression=encoding.png_compression, palette=encoding.png_palette, Q=quality, keep=keep
        )
    if fmt == "webp":
        return lambda quality: image.webpsave_buffer(
            Q=quality,
            effort=encoding.webp_effort,
            smart_subsample=True,
            lossless=lossless and encoding.webp_lossless_sources,
            keep=keep,
        )
    if fmt == "gif":
        return lambda quality: image.gifsave_buffer(keep=keep)
    if fmt == "avif":
        return lambda quality: image.heifsave_buffer(
            Q=quality, compression="av1", effort=encoding.avif_effort, keep=keep
        )
    raise ImageServerError(f"no encoder for {fmt!r}; known: {sorted(CONTENT_TYPES)}")


def _first_line(exc: pyvips.Error) -> str:
    return str(exc.message).strip().splitlines()[0] if exc.message else "libvips error"
