"""What an output is, and where its pixels come from: pure arithmetic, no libvips."""

from __future__ import annotations

import dataclasses
import math

from common.errors import (
    OutputTooLarge,
)
from common.urls import Fit, Gravity


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


def output_size(width: int, height: int, rendition: Rendition) -> tuple[int, int]:
    """The size of one frame of the output from an upright `width` x `height` original."""
    if rendition.fit is Fit.NONE:
        return width, height
    place = geometry(width, height, rendition)
    return place.width, place.height


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


def check_output_pixels(
    width: int, height: int, frames: int, rendition: Rendition, limits: Limits
) -> None:
    pixels = width * height * frames
    if limits.max_output_pixels and pixels > limits.max_output_pixels:
        kept = f" x {frames} frames" if frames > 1 else ""
        raise OutputTooLarge(
            f"the output would be {width}x{height}{kept} = {pixels} pixels, above "
            f"max_output_pixels.{rendition.format} ({limits.max_output_pixels})"
        )
