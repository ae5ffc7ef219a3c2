"""Test images: a real photograph shipped in samples/, and images made with libvips."""

from __future__ import annotations

import functools
import struct
import zlib

import pyvips

from tests.support import REPO

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


def smooth(width: int, height: int) -> bytes:
    """A JPEG of gentle gradients: an easy picture, little to lose at low quality."""
    ramp = pyvips.Image.xyz(width, height)
    image = ramp[0].bandjoin([ramp[1], ramp[0] * 0.2 + 90]).cast("uchar")
    return bytes(image.copy(interpretation="srgb").write_to_buffer(".jpg", Q=95))


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


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int, height: int) -> bytes:
    """A few hundred bytes of PNG whose header declares width x height RGB pixels."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\x00" * 4096)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", rows)
        + _png_chunk(b"IEND", b"")
    )


def jpeg_bomb(width: int, height: int) -> bytes:
    """A small real JPEG whose frame header (SOF0) is patched to declare width x height."""
    data = bytearray(solid(64, 64, (200, 100, 50), ".jpg"))
    sof = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


def animated_gif(frames: int, side: int = 64) -> bytes:
    """`frames` distinct frames: a white square moving over black."""
    strip = pyvips.Image.black(side, side * frames, bands=3)
    for index in range(frames):
        x, y = index % (side - 4), (index // (side - 4)) * 4 % (side - 4)
        strip = strip.draw_rect([255, 255, 255], x, index * side + y, 4, 4, fill=True)
    strip = strip.cast("uchar").copy(interpretation="srgb")
    strip.set_type(pyvips.GValue.gint_type, "page-height", side)
    return bytes(strip.gifsave_buffer())


def quadrants(orientation: int) -> bytes:
    """A 200x100 JPEG, quadrants red | green over blue | white, tagged with an EXIF orientation."""
    top = solid(100, 50, (255, 0, 0)), solid(100, 50, (0, 255, 0))
    bottom = solid(100, 50, (0, 0, 255)), solid(100, 50, (255, 255, 255))
    image = (
        decode(top[0])
        .join(decode(top[1]), "horizontal")
        .join(decode(bottom[0]).join(decode(bottom[1]), "horizontal"), "vertical")
    )
    image = image.copy()
    image.set_type(pyvips.GValue.gint_type, "orientation", orientation)
    return bytes(image.jpegsave_buffer(Q=95))
