"""Resizing a decoded original into its output's box: cropped, padded or smart-cropped."""

from __future__ import annotations

import pyvips

from common.urls import Fit, Gravity, pad_colour
from processor.imaging.colour import to_srgb
from processor.imaging.decode import LOAD_OPTIONS, abandon_after, jpeg_at_least, load, upright_size
from processor.imaging.encode import encode
from processor.imaging.geometry import Geometry, Limits, Rendition, geometry


def resize_original(
    original: bytes, header: pyvips.Image, rendition: Rendition, frames: int
) -> pyvips.Image:
    if rendition.fit is Fit.NONE:
        return load(original, header, frames=frames).autorot()
    width, height = upright_size(header)
    place = geometry(width, height, rendition)
    size = {"height": place.resize_height, "size": "force"}
    if header.get("vips-loader") == "jpegload_buffer":
        # Shrink-on-load by the largest DCT scale that still covers the output:
        # libvips' thumbnail keeps a factor of two above the output for its own
        # resampling, so a 2560-px JPEG asked at 1000 px would be decoded whole;
        # decoding at 1/2 and resampling from there is what Pillow's draft mode
        # (thumbor) and imgproxy do, and costs about half.
        image = jpeg_at_least(original, header, place.resize_width, place.resize_height)
        image = image.thumbnail_image(place.resize_width, **size)
    else:
        # An animation is resized frame by frame (`height` is a frame's).
        options = f"{LOAD_OPTIONS},n={frames}" if frames > 1 else LOAD_OPTIONS
        image = pyvips.Image.thumbnail_buffer(
            original, place.resize_width, option_string=options, **size
        )
    return place_box(image, place, rendition)


def place_box(image: pyvips.Image, place: Geometry, rendition: Rendition) -> pyvips.Image:
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
    image = to_srgb(image)
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


def encoded(image: pyvips.Image, rendition: Rendition, limits: Limits, lossless: bool) -> bytes:
    image = to_srgb(image)
    if rendition.format == "jpg" and image.hasalpha():
        image = image.flatten(background=[255])
    abandon_after(image, limits.deadline)
    return encode(image, rendition, lossless)
