"""Test images: a real photograph shipped in samples/, and images made with libvips."""

from __future__ import annotations

import functools

import pyvips

from tests.harness import REPO

PHOTO_PATH = REPO / "samples" / "sample" / "image" / "1" / "original.jpg"  # 1600x1000


@functools.cache
def photo() -> bytes:
    return PHOTO_PATH.read_bytes()


def decode(data: bytes) -> pyvips.Image:
    return pyvips.Image.new_from_buffer(data, "")


def loader(data: bytes) -> str:
    return str(decode(data).get("vips-loader"))


def solid(width: int, height: int, rgb: tuple[int, int, int], fmt: str = ".png") -> bytes:
    image = (pyvips.Image.black(width, height) + list(rgb)).cast("uchar")
    image = image.copy(interpretation="srgb")
    return bytes(image.write_to_buffer(fmt))


def with_alpha(width: int, height: int) -> bytes:
    """A red PNG whose left half is fully transparent."""
    rgb = (pyvips.Image.black(width, height) + [255, 0, 0]).cast("uchar")
    half = width // 2
    alpha = pyvips.Image.black(half, height).join(
        pyvips.Image.black(width - half, height) + 255, "horizontal"
    )
    rgba = rgb.bandjoin(alpha.cast("uchar")).copy(interpretation="srgb")
    return bytes(rgba.write_to_buffer(".png"))


def mean_abs_difference(a: pyvips.Image, b: pyvips.Image) -> float:
    """Mean absolute pixel difference (0-255) of two images of the same size."""
    assert (a.width, a.height) == (b.width, b.height)
    return float((a.cast("float") - b.cast("float")).abs().avg())
