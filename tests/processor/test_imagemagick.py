"""Every output of the URL grammar has the geometry of the original service's
ImageMagick recipe: the same size, the same centred crop, transparency onto
white for JPEG. ImageMagick (Debian's package, installed by `make test`) runs
here on the same originals; the two must agree to SSIM >= 0.97.

The recipe: `convert -strip -flatten`, then `-resize W` (w<W>), `-resize WxH^
-gravity center -extent WxH` (x<N>, <W>x<H>) or nothing (full_size), then
`-background rgba(255,255,255,1) -quality Q`. Two differences are ours on
purpose and tested elsewhere: a width past the original's is not enlarged
unless `enlarge_width` is set (set here), and EXIF orientation is applied
(ImageMagick is given `-auto-orient` for the one rotated original).
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import pyvips

from common.urls import parse_output
from processor import imaging
from testkit import recipe
from testkit.ssim import ssim
from tests.images import decode, photo

OUTPUTS = ["w500", "w999", "x600", "300x400", "301x199", "x37", "1000x100", "full_size"]
MIN_SSIM = 0.97


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
    return imaging.Limits(frozenset(imaging.LOADERS), 100_000_000, time.monotonic() + 60)


def _rendition(output: str, fmt: str) -> imaging.Rendition:
    spec = parse_output(f"{output}.{fmt}")
    return imaging.Rendition(spec.fit, spec.width, spec.height, fmt, 75, enlarge=True)


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
