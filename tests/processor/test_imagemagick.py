"""Every output of the URL grammar has the geometry ImageMagick gives it: the
original service's recipe for its shapes (the same size, the same centred crop,
transparency onto white for JPEG) and the ImageMagick equivalent of each shape
added since (h<H>, -fit, -pad, gravities: testkit/recipe.py). ImageMagick
(Debian's package, installed by `make test`) runs here on the same originals;
the two must agree to SSIM >= 0.97, and a -pad's padding must be where
ImageMagick puts it, in its colour. `-smart` has no ImageMagick equivalent: it
is compared with libvips' own attention crop, and shown to find a subject that
the centre crop misses.

Two differences are ours on purpose and tested elsewhere: a width past the
original's is not enlarged unless `enlarge_width` is set (set here), and EXIF
orientation is applied (ImageMagick is given `-auto-orient` for the one
rotated original).
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import time
from pathlib import Path

import numpy
import pytest
import pyvips

from common.formats import LOADERS
from common.urls import Fit, parse_output
from processor import imaging
from testkit import recipe
from testkit.ssim import ssim
from tests.support.images import decode, photo

OUTPUTS = ["w500", "w999", "x600", "300x400", "301x199", "x37", "1000x100", "full_size"]
# The shapes added to the original service's, each against its ImageMagick equivalent.
SHAPES = [
    "h200", "h999", "300x200-fit", "x300-fit", "200x300-fit", "300x150-pad",
    "150x300-pad-ff0000", "x300-pad", "x300-n", "300x200-s", "200x300-e", "200x300-w",
    "x300-ne", "x300-sw", "301x199-se", "x37-nw",
]  # fmt: skip
ORIGINALS = ["photo.jpg", "odd.png", "portrait.jpg", "rotated.jpg", "alpha.png"]
MIN_SSIM = 0.97
PAD_TOLERANCE = 8  # of a JPEG's flat padding, per channel


@functools.cache
def convert() -> str:
    """The path of ImageMagick's convert; fails (never skips) when it is not there."""
    path = shutil.which("convert")
    version = subprocess.run([path or "convert", "-version"], capture_output=True, text=True)
    if path is None or "ImageMagick" not in version.stdout:
        pytest.fail("ImageMagick is not installed: `make test` installs it (imagemagick)")
    return path


def _photo_image() -> pyvips.Image:
    return decode(photo())  # 1600x1000


@functools.cache
def originals() -> dict[str, bytes]:
    image = _photo_image()
    # Transparency as photographs have it: a fade from opaque to clear, and a
    # clear hole with hard edges.
    fade = pyvips.Image.xyz(image.width, image.height)[0] * (255 / image.width)
    hole = pyvips.Image.black(300, 200).embed(400, 300, image.width, image.height, extend="white")
    alpha = (fade * (hole / 255)).cast("uchar")
    with_alpha = image.bandjoin(alpha).copy(interpretation="srgb")
    return {
        "photo.jpg": photo(),
        "odd.png": bytes(image.crop(3, 5, 1001, 667).write_to_buffer(".png")),
        "portrait.jpg": bytes(image.crop(100, 0, 637, 999).write_to_buffer(".jpg", Q=95)),
        "alpha.png": bytes(with_alpha.crop(0, 0, 1200, 900).write_to_buffer(".png")),
        # Stored on its side, with an EXIF orientation that turns it upright.
        "rotated.jpg": _rotated(image.crop(0, 0, 1200, 800)),
    }


def _rotated(image: pyvips.Image) -> bytes:
    stored = image.rot270().copy()
    stored.set_type(pyvips.GValue.gint_type, "orientation", 6)
    return bytes(stored.write_to_buffer(".jpg", Q=95))


def _limits() -> imaging.Limits:
    return imaging.Limits(frozenset(LOADERS), 100_000_000, time.monotonic() + 60)


def _rendition(output: str, fmt: str) -> imaging.Rendition:
    spec = parse_output(f"{output}.{fmt}")
    return imaging.Rendition(
        spec.fit, spec.width, spec.height, fmt, 75,
        enlarge=True, gravity=spec.gravity, background=spec.background,
    )  # fmt: skip


def imagemagick(original: str, output: str, fmt: str, tmp_path: Path) -> bytes:
    source = tmp_path / original
    source.write_bytes(originals()[original])
    orient = ("-auto-orient",) if original == "rotated.jpg" else ()
    command = recipe.command(source, f"{output}.{fmt}", convert(), orient)
    return subprocess.run(command, capture_output=True, check=True).stdout


def _assert_alike(ours: bytes, theirs: bytes) -> None:
    a, b = decode(ours), decode(theirs)
    assert (a.width, a.height) == (b.width, b.height)
    assert ssim(ours, theirs) >= MIN_SSIM


@pytest.mark.parametrize("output", OUTPUTS)
@pytest.mark.parametrize("original", ["photo.jpg", "odd.png", "portrait.jpg", "rotated.jpg"])
def test_jpeg_outputs_match_the_imagemagick_recipe(
    original: str, output: str, tmp_path: Path
) -> None:
    ours = imaging.render(originals()[original], _rendition(output, "jpg"), _limits())
    _assert_alike(ours, imagemagick(original, output, "jpg", tmp_path))


@pytest.mark.parametrize("output", ["w500", "x600", "301x199", "full_size"])
def test_transparency_goes_onto_white_for_jpeg_and_stays_in_png(
    output: str, tmp_path: Path
) -> None:
    original = originals()["alpha.png"]
    jpeg = imaging.render(original, _rendition(output, "jpg"), _limits())
    _assert_alike(jpeg, imagemagick("alpha.png", output, "jpg", tmp_path))
    png = imaging.render(original, _rendition(output, "png"), _limits())
    # The recipe flattened PNG outputs onto white too; ours keep their alpha,
    # which looks the same on a white page (ssim flattens onto white).
    assert decode(png).hasalpha()
    _assert_alike(png, imagemagick("alpha.png", output, "png", tmp_path))


@pytest.mark.parametrize("output", [o for o in OUTPUTS if o != "full_size"])
@pytest.mark.parametrize("original", ["photo.jpg", "portrait.jpg", "rotated.jpg"])
def test_outputs_from_masters_match_the_imagemagick_recipe(
    original: str, output: str, tmp_path: Path
) -> None:
    master = tmp_path / "master.v"
    assert imaging.make_master(originals()[original], 500, _limits(), master)
    rendition = _rendition(output, "jpg")
    ours = imaging.render_master(master, rendition, _limits())
    if ours is None:  # what the processor does: an output larger than the master
        ours = imaging.render(originals()[original], rendition, _limits())
    _assert_alike(ours, imagemagick(original, output, "jpg", tmp_path))


def test_a_master_covers_the_outputs_it_holds_the_pixels_for(tmp_path: Path) -> None:
    master = tmp_path / "master.v"
    portrait = originals()["portrait.jpg"]  # 637x999: its master for 400 is decoded at 1/2
    assert imaging.make_master(portrait, 400, _limits(), master)
    made = pyvips.Image.new_from_file(str(master))
    assert (made.width, made.height) == (318, 499)

    def from_master(output: str) -> bool:
        return imaging.render_master(master, _rendition(output, "jpg"), _limits()) is not None

    assert from_master("w318")  # 318x499
    assert not from_master("w319")  # 319x500: taller than the master
    assert from_master("x300")
    assert not from_master("full_size")


def _from_master(original: bytes, rendition: imaging.Rendition, tmp_path: Path) -> bytes:
    """What the processor makes from the image's master (from the original when
    the master has too few pixels for this output, or there is none)."""
    master = tmp_path / "master.v"
    if imaging.make_master(original, 500, _limits(), master):
        made = imaging.render_master(master, rendition, _limits())
        if made is not None:
            return made
    return imaging.render(original, rendition, _limits())


@pytest.mark.parametrize("from_master", [False, True], ids=["original", "master"])
@pytest.mark.parametrize("output", SHAPES)
@pytest.mark.parametrize("original", ORIGINALS)
def test_each_shape_matches_imagemagick(
    original: str, output: str, from_master: bool, tmp_path: Path
) -> None:
    rendition = _rendition(output, "jpg")
    data = originals()[original]
    if from_master:
        ours = _from_master(data, rendition, tmp_path)
    else:
        ours = imaging.render(data, rendition, _limits())
    theirs = imagemagick(original, output, "jpg", tmp_path)
    _assert_alike(ours, theirs)
    if rendition.fit is Fit.PAD:
        colour = rendition.background or "ffffff"
        expected = [int(colour[i : i + 2], 16) for i in (0, 2, 4)]
        for made in (ours, theirs):
            padding = _padding(data, rendition, decode(made))
            assert padding.size, f"{output} of {original} has no padding to check"
            assert numpy.abs(padding - expected).max() <= PAD_TOLERANCE


def _padding(original: bytes, rendition: imaging.Rendition, output: pyvips.Image) -> numpy.ndarray:
    """The pixels of `output` that our geometry says are padding, those at
    least a JPEG block (16 px with its colour subsampled) away from the picture:
    (n, bands)."""
    upright = decode(original).autorot()
    place = imaging.geometry(upright.width, upright.height, rendition)
    left, top = -place.left, -place.top  # the picture's corner in the output
    ys, xs = numpy.mgrid[0 : output.height, 0 : output.width]
    inside = (
        (xs >= left - 16) & (xs < left + place.resize_width + 16)
        & (ys >= top - 16) & (ys < top + place.resize_height + 16)
    )  # fmt: skip
    pixels = output.numpy().reshape(output.height, output.width, output.bands)
    padding: numpy.ndarray = pixels[~inside][:, :3].astype(int)
    return padding


@pytest.mark.parametrize("original", ["photo.jpg", "alpha.png"])
def test_padding_is_transparent_where_the_format_has_alpha(original: str, tmp_path: Path) -> None:
    rendition = _rendition("300x400-pad", "png")
    ours = imaging.render(originals()[original], rendition, _limits())
    output = decode(ours)
    assert output.hasalpha()
    upright = decode(originals()[original])
    place = imaging.geometry(upright.width, upright.height, rendition)
    assert place.top < 0  # a landscape in a portrait box: padding above and below
    band = output.crop(0, 0, output.width, -place.top).numpy()
    assert (band[..., -1] == 0).all()
    # On a white page it looks as ImageMagick's does.
    _assert_alike(ours, imagemagick(original, "300x400-pad", "png", tmp_path))


@pytest.mark.parametrize("output", ["x300-smart", "300x200-smart", "200x300-smart"])
@pytest.mark.parametrize("original", ORIGINALS)
def test_a_smart_crop_is_libvips_attention_crop(original: str, output: str) -> None:
    data = originals()[original]
    ours = imaging.render(data, _rendition(output, "jpg"), _limits())
    spec = parse_output(f"{output}.jpg")
    # libvips' own: thumbnail covers the box and crops at the attention point.
    reference = pyvips.Image.thumbnail_buffer(
        data, spec.width, height=spec.height, crop="attention"
    )
    if reference.hasalpha():
        reference = reference.flatten(background=[255])
    _assert_alike(ours, bytes(reference.jpegsave_buffer(Q=95)))


def test_a_smart_crop_keeps_the_subject_that_the_centre_crop_cuts_off() -> None:
    # A plain, softly lit 1200x600 field; near its left edge a 200x200 subject:
    # a red frame around a black and white checkerboard (colour and edges).
    field = (pyvips.Image.xyz(1200, 600)[0] * (30 / 1200) + 90).cast("uchar")
    picture = field.bandjoin([field, field]).copy(interpretation="srgb")
    squares = pyvips.Image.xyz(160, 160) // 20
    checker = ((squares[0] + squares[1]) % 2 * 255).cast("uchar")
    subject = checker.bandjoin([checker, checker]).copy(interpretation="srgb")
    subject = subject.embed(20, 20, 200, 200, extend="background", background=[220, 30, 30])
    original = bytes(picture.insert(subject, 40, 200).jpegsave_buffer(Q=95))

    def red_share(output: str) -> float:
        made = decode(imaging.render(original, _rendition(output, "jpg"), _limits())).numpy()
        red = (made[..., 0] > 150) & (made[..., 1] < 90) & (made[..., 2] < 90)
        return float(red.mean())

    # x300: the field scaled to 600x300, the subject at 20-120 across; the
    # centre crop takes 150-450. The frame is 3,600 of a crop's 90,000 pixels.
    assert red_share("x300") == 0.0
    assert red_share("x300-smart") >= 0.035
