from __future__ import annotations

import time

import pytest
import pyvips

from common.errors import UnsupportedImage
from common.urls import Fit
from processor.imaging import LOADERS, Limits, Rendition
from processor.imaging import render as render_within
from tests.images import decode, loader, mean_abs_difference, photo, solid, with_alpha


def render(original: bytes, rendition: Rendition) -> bytes:
    """Render with the default limits: every format, 50 Mpx, a minute."""
    return render_within(
        original,
        rendition,
        Limits(frozenset(LOADERS) - {"svg", "pdf"}, 50_000_000, time.monotonic() + 60),
    )


def rendition(fit: Fit, width: int | None, height: int | None, fmt: str = "jpg") -> Rendition:
    return Rendition(fit, width, height, fmt, 85)


def test_width_keeps_the_aspect_ratio() -> None:
    out = decode(render(photo(), rendition(Fit.WIDTH, 500, None)))
    assert (out.width, out.height) == (500, 313)  # 1600x1000 original


def test_width_never_upscales() -> None:
    out = decode(render(solid(200, 100, (0, 128, 0)), rendition(Fit.WIDTH, 500, None)))
    assert (out.width, out.height) == (200, 100)


def test_exact_boxes_may_upscale() -> None:
    out = decode(render(solid(200, 100, (0, 128, 0)), rendition(Fit.COVER, 300, 400)))
    assert (out.width, out.height) == (300, 400)


def test_square_is_a_centred_crop() -> None:
    out = decode(render(photo(), rendition(Fit.COVER, 600, 600, "png")))
    assert (out.width, out.height) == (600, 600)
    # Reference: scale so that the short side is 600, then take the middle.
    scaled = pyvips.Image.new_from_buffer(photo(), "").resize(600 / 1000)
    centre = scaled.crop((scaled.width - 600) // 2, 0, 600, 600)
    left = scaled.crop(0, 0, 600, 600)
    assert mean_abs_difference(out, centre) < 4
    assert mean_abs_difference(out, left) > 4 * mean_abs_difference(out, centre)


def test_full_size_converts_format_without_resizing() -> None:
    data = render(photo(), rendition(Fit.NONE, None, None, "webp"))
    assert loader(data) == "webpload_buffer"
    out = decode(data)
    assert (out.width, out.height) == (1600, 1000)
    source = decode(photo())
    assert mean_abs_difference(out, source) < 4


@pytest.mark.parametrize("fit", [Fit.NONE, Fit.WIDTH, Fit.COVER])
def test_large_rotated_originals_come_out_upright(fit: Fit) -> None:
    """Turning a large image upright reads it out of order: it must not be read as a stream."""
    image = decode(photo()).resize(1.6).copy()  # 2560x1600, tagged "rotate 90 to view"
    image.set_type(pyvips.GValue.gint_type, "orientation", 6)
    tagged = bytes(image.jpegsave_buffer(Q=90))
    width, height = {Fit.NONE: (None, None), Fit.WIDTH: (500, None), Fit.COVER: (300, 400)}[fit]
    out = decode(render(tagged, rendition(fit, width, height, "jpg")))
    expected = {Fit.NONE: (1600, 2560), Fit.WIDTH: (500, 800), Fit.COVER: (300, 400)}[fit]
    assert (out.width, out.height) == expected


@pytest.mark.parametrize(
    ("fmt", "expected_loader"),
    [
        ("jpg", "jpegload_buffer"),
        ("png", "pngload_buffer"),
        ("webp", "webpload_buffer"),
        ("gif", "gifload_buffer"),
        ("avif", "heifload_buffer"),
    ],
)
def test_every_output_format(fmt: str, expected_loader: str) -> None:
    assert loader(render(photo(), rendition(Fit.WIDTH, 100, None, fmt))) == expected_loader


def test_quality_changes_jpeg_size() -> None:
    low = render(photo(), Rendition(Fit.WIDTH, 500, None, "jpg", 20))
    high = render(photo(), Rendition(Fit.WIDTH, 500, None, "jpg", 95))
    assert len(low) < len(high) / 2


def test_alpha_is_flattened_onto_white_for_jpeg() -> None:
    out = decode(render(with_alpha(100, 100), rendition(Fit.WIDTH, 100, None)))
    assert out.bands == 3
    left = out.crop(0, 0, 40, 100).avg()
    right = out.crop(60, 0, 40, 100)
    assert left > 250  # transparent became white
    assert right[0](0, 0)[0] > 240 and right[1](0, 0)[0] < 15  # opaque red stays red


def test_alpha_is_kept_for_png_and_webp() -> None:
    for fmt in ("png", "webp"):
        out = decode(render(with_alpha(100, 100), rendition(Fit.WIDTH, 50, None, fmt)))
        assert out.hasalpha(), fmt


def test_exif_orientation_is_applied_and_metadata_stripped() -> None:
    # A 200x100 image whose EXIF says "rotate 90° clockwise to display".
    image = pyvips.Image.new_from_buffer(solid(200, 100, (10, 200, 10)), "").copy()
    image.set_type(pyvips.GValue.gint_type, "orientation", 6)
    tagged = image.jpegsave_buffer()
    assert decode(tagged).get("orientation") == 6
    for fit in (Fit.WIDTH, Fit.NONE):
        out = decode(render(tagged, rendition(fit, 100, None)))
        assert out.height > out.width, fit
        assert out.get_typeof("exif-data") == 0
        assert out.get_typeof("orientation") == 0 or out.get("orientation") == 1


def test_sixteen_bit_and_cmyk_inputs_become_8_bit_srgb() -> None:
    rgb16 = (pyvips.Image.black(64, 64, bands=3) + [40000, 20000, 1000]).cast("ushort")
    png16 = rgb16.copy(interpretation="rgb16").pngsave_buffer()
    cmyk = (pyvips.Image.black(64, 64, bands=4) + [0, 255, 255, 0]).cast("uchar")
    jpeg_cmyk = cmyk.copy(interpretation="cmyk").jpegsave_buffer()
    for original in (png16, jpeg_cmyk):
        for fit in (Fit.WIDTH, Fit.NONE):
            out = decode(render(original, rendition(fit, 32, None, "png")))
            assert out.format == "uchar" and out.bands == 3, (fit, out.interpretation)
    red = decode(render(jpeg_cmyk, rendition(Fit.NONE, None, None, "png")))(10, 10)
    assert red[0] > 180 and red[1] < 80  # CMYK 0/100/100/0 is red


@pytest.mark.parametrize(
    "data",
    [b"", b"not an image at all" * 50, b"<html><body>hello</body></html>", photo()[:2000]],
)
def test_undecodable_originals_are_unsupported(data: bytes) -> None:
    with pytest.raises(UnsupportedImage):
        render(data, rendition(Fit.WIDTH, 100, None))


def test_svg_is_not_an_accepted_original() -> None:
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"></svg>'
    with pytest.raises(UnsupportedImage):
        render(svg, rendition(Fit.WIDTH, 100, None))
