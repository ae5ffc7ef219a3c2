"""Encoding an output, at a quality given or at the lowest that keeps a target SSIM."""

from __future__ import annotations

from collections.abc import Callable

import pyvips

from common.errors import ImageServerError
from common.formats import CONTENT_TYPES, TARGETED_FORMATS
from processor.imaging.geometry import Rendition

_KEEP_NO_METADATA = 0  # VIPS_FOREIGN_KEEP_NONE


def encode(image: pyvips.Image, rendition: Rendition, lossless: bool) -> bytes:
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
