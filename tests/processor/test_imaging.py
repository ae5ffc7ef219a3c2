from __future__ import annotations

import io
import time

import pytest
import pyvips
from PIL import Image, ImageCms

from common.errors import ImageTooLarge, UnsupportedImage
from common.formats import LOADERS
from common.urls import Fit
from processor.imaging import Encoding, Limits, Rendition
from processor.imaging import render as render_within
from testkit.ssim import ssim
from tests.support.images import (
    decode,
    loader,
    mean_abs_difference,
    photo,
    smooth,
    solid,
    with_alpha,
)


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


def _photo_600() -> pyvips.Image:
    return decode(photo()).thumbnail_image(600)


INPUTS = {
    "jpeg baseline": lambda: _photo_600().jpegsave_buffer(Q=90),
    "jpeg progressive": lambda: _photo_600().jpegsave_buffer(Q=90, interlace=True),
    "png 8-bit": lambda: _photo_600().pngsave_buffer(),
    "png 16-bit": lambda: _photo_600().colourspace("rgb16").pngsave_buffer(),
    "png palette": lambda: _photo_600().pngsave_buffer(palette=True, Q=100),
    "png alpha": lambda: _photo_600().bandjoin(255).pngsave_buffer(),
    "webp lossy": lambda: _photo_600().webpsave_buffer(Q=90),
    "webp lossless": lambda: _photo_600().webpsave_buffer(lossless=True),
    "webp alpha": lambda: _photo_600().bandjoin(255).webpsave_buffer(Q=90),
    "gif": lambda: _photo_600().gifsave_buffer(),
    "avif": lambda: _photo_600().heifsave_buffer(Q=90, compression="av1", effort=0),
}


@pytest.mark.parametrize("kind", INPUTS)
def test_every_input_format_gives_the_same_picture(kind: str) -> None:
    original = bytes(INPUTS[kind]())
    out = decode(render(original, Rendition(Fit.WIDTH, 150, None, "png", 100)))
    expected = _photo_600().thumbnail_image(150)
    assert (out.width, out.height) == (expected.width, expected.height)
    flat = out.flatten(background=[255]) if out.hasalpha() else out
    assert mean_abs_difference(flat, expected) < 6  # gif: a 256-colour palette


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


# --- encoders ---------------------------------------------------------------------


def _encoded(original: bytes, fmt: str, encoding: Encoding, quality: int = 75) -> bytes:
    return render(original, Rendition(Fit.WIDTH, 300, None, fmt, quality, encoding))


def _jpeg_frame_marker(data: bytes) -> int:
    """0xC0 (baseline) or 0xC2 (progressive): the first start-of-frame marker."""
    index = 2
    while data[index + 1] not in (0xC0, 0xC1, 0xC2):
        index += 2 + int.from_bytes(data[index + 2 : index + 4], "big")
    return data[index + 1]


def test_jpeg_is_baseline_unless_configured_progressive() -> None:
    assert _jpeg_frame_marker(_encoded(photo(), "jpg", Encoding())) == 0xC0
    assert _jpeg_frame_marker(_encoded(photo(), "jpg", Encoding(jpeg_progressive=True))) == 0xC2


def test_trellis_makes_smaller_jpegs_of_the_same_picture() -> None:
    plain = _encoded(photo(), "jpg", Encoding())
    trellis = _encoded(photo(), "jpg", Encoding(jpeg_trellis=True))
    assert len(trellis) < len(plain)
    assert mean_abs_difference(decode(plain), decode(trellis)) < 3


def test_png_palette_quantises_to_at_most_256_colours() -> None:
    full = _encoded(photo(), "png", Encoding())
    palette = _encoded(photo(), "png", Encoding(png_palette=True))
    colour_type = 25  # byte of the IHDR chunk: 2 RGB, 3 palette
    assert (full[colour_type], palette[colour_type]) == (2, 3)
    assert len(palette) < len(full) / 2
    assert mean_abs_difference(decode(full), decode(palette)) < 8


def test_webp_is_lossless_from_a_lossless_original_when_configured() -> None:
    png = photo_as(".png")
    lossless = _encoded(png, "webp", Encoding(webp_lossless_sources=True))
    assert lossless[12:16] == b"VP8L"
    assert _encoded(png, "webp", Encoding())[12:16] == b"VP8 "  # lossy by default
    # A lossy original never gives a lossless WebP: it would only be bigger.
    assert _encoded(photo(), "webp", Encoding(webp_lossless_sources=True))[12:16] == b"VP8 "


def photo_as(suffix: str) -> bytes:
    return bytes(decode(photo()).write_to_buffer(suffix))


def test_a_display_p3_original_is_converted_to_srgb_like_lcms_does() -> None:
    # A P3 picture: the photo's numbers, tagged with libvips' built-in P3 profile.
    tagged = decode(photo()).icc_transform("p3", embedded=False, input_profile="srgb")
    p3 = bytes(tagged.write_to_buffer(".png"))
    out = Image.open(io.BytesIO(render(p3, Rendition(Fit.NONE, None, None, "png", 75))))
    profile = ImageCms.ImageCmsProfile(io.BytesIO(tagged.get("icc-profile-data")))
    source = Image.open(io.BytesIO(p3))
    expected = ImageCms.profileToProfile(
        source, profile, ImageCms.createProfile("sRGB"), renderingIntent=ImageCms.Intent.PERCEPTUAL
    )
    assert expected is not None
    ours = pyvips.Image.new_from_buffer(_png(out), "")
    theirs = pyvips.Image.new_from_buffer(_png(expected), "")
    assert mean_abs_difference(ours, theirs) < 2
    # and the output is no longer the P3 numbers
    assert mean_abs_difference(ours, decode(p3)) > 2


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "PNG")
    return buffer.getvalue()


# --- animations -------------------------------------------------------------------


def animation(fmt: str, frames: int = 4, width: int = 200, height: int = 120) -> bytes:
    """`frames` frames of distinct solid colours, 100 ms each."""
    strip = pyvips.Image.arrayjoin(
        [(pyvips.Image.black(width, height) + [i * 60, 255 - i * 60, 90]) for i in range(frames)],
        across=1,
    ).cast("uchar")
    strip = strip.copy(interpretation="srgb")
    strip.set_type(pyvips.GValue.gint_type, "page-height", height)
    strip.set_type(pyvips.GValue.array_int_type, "delay", [100] * frames)
    return bytes(strip.write_to_buffer(f".{fmt}"))


def frames_of(data: bytes) -> list[pyvips.Image]:
    image = pyvips.Image.new_from_buffer(data, "", n=-1)
    height = image.get("page-height")
    return [image.crop(0, i * height, image.width, height) for i in range(image.height // height)]


@pytest.mark.parametrize("source", ["gif", "webp"])
@pytest.mark.parametrize("fmt", ["gif", "webp"])
@pytest.mark.parametrize(
    ("fit", "width", "height"),
    [(Fit.WIDTH, 100, None), (Fit.COVER, 50, 50), (Fit.NONE, None, None)],
)
def test_animations_stay_animated_in_gif_and_webp(
    source: str, fmt: str, fit: Fit, width: int | None, height: int | None
) -> None:
    out = render(animation(source), Rendition(fit, width, height, fmt, 90))
    frames = frames_of(out)
    assert len(frames) == 4
    expected = {Fit.WIDTH: (100, 60), Fit.COVER: (50, 50), Fit.NONE: (200, 120)}[fit]
    assert {(f.width, f.height) for f in frames} == {expected}
    for index, frame in enumerate(frames):  # each frame keeps its own colour
        red = frame.extract_band(0).avg()
        assert abs(red - index * 60) < 6
    assert list(pyvips.Image.new_from_buffer(out, "", n=-1).get("delay")) == [100] * 4


def test_other_outputs_take_the_first_frame() -> None:
    out = decode(render(animation("gif"), rendition(Fit.WIDTH, 100, None, "jpg")))
    assert (out.width, out.height) == (100, 60)
    assert abs(out.extract_band(1).avg() - 255) < 6  # frame 0: green 255


def test_frames_past_max_frames_are_dropped_and_counted_as_pixels() -> None:
    limits = Limits(frozenset(LOADERS), 50_000_000, time.monotonic() + 60, max_frames=3)
    out = render_within(
        animation("gif", frames=6), Rendition(Fit.WIDTH, 100, None, "gif", 90), limits
    )
    assert len(frames_of(out)) == 3
    tight = Limits(frozenset(LOADERS), 200 * 120 * 5, time.monotonic() + 60)
    with pytest.raises(ImageTooLarge):
        render_within(animation("gif", frames=6), Rendition(Fit.WIDTH, 100, None, "gif", 90), tight)


# --- quality targeting ------------------------------------------------------------


def test_quality_target_gives_easy_pictures_small_files_and_keeps_detail() -> None:
    easy = smooth(600, 400)
    target = 0.97

    def targeted(original: bytes) -> bytes:
        return render(original, Rendition(Fit.WIDTH, 300, None, "jpg", 78, quality_target=target))

    plain = render(easy, Rendition(Fit.WIDTH, 300, None, "jpg", 78))
    assert len(targeted(easy)) < len(plain)
    # The photo keeps the target against the same resize without loss (a PNG of it).
    lossless = render(photo(), Rendition(Fit.WIDTH, 300, None, "png", 100))
    assert ssim(targeted(photo()), lossless) >= target - 0.005
    # A stricter target needs more bytes.
    stricter = render(photo(), Rendition(Fit.WIDTH, 300, None, "jpg", 78, quality_target=0.99))
    assert len(stricter) > len(targeted(photo()))


@pytest.mark.parametrize(
    ("fit", "width", "height", "expected"),
    [
        (Fit.HEIGHT, 1000, 400, (200, 100)),  # h400 of a 200x100 original
        (Fit.INSIDE, 600, 600, (200, 100)),  # 600x600-fit
        (Fit.PAD, 600, 600, (600, 600)),  # 600x600-pad: the box, the image not enlarged
    ],
)
def test_h_fit_and_pad_never_enlarge(
    fit: Fit, width: int, height: int, expected: tuple[int, int]
) -> None:
    original = solid(200, 100, (0, 128, 0))
    out = decode(render(original, Rendition(fit, width, height, "png", 85)))
    assert (out.width, out.height) == expected
    if fit is Fit.PAD:  # the 200x100 picture sits in the middle, unscaled
        assert abs(out.crop(200, 250, 200, 100).extract_band(1).avg() - 128) < 2
        assert out.crop(0, 0, 150, 150).extract_band(1).avg() != 128  # padding around it
