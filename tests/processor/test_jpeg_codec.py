"""JPEG originals decoded by libjpeg-turbo (simplejpeg) come out as libvips' own
loader makes them: the corpus, every output size of the bench's range."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import pyvips

from common.formats import LOADERS
from common.urls import Fit
from processor import imaging
from processor.imaging.decode import decoded_jpeg
from testkit import corpus
from testkit.ssim import ssim
from tests.support import REPO
from tests.support.images import decode, photo

WIDTHS = (64, 100, 250, 300, 500, 640, 700, 900, 1000)
CORPUS_CACHE = REPO / "bench" / ".work" / "debian"  # shared with `make bench`


@pytest.fixture(scope="module")
def jpegs() -> list[Path]:
    """The real photographs of ../shared/corpus (Debian's wallpapers: baseline,
    progressive, greyscale, 5120x2880), fetched from Debian's packages."""
    found = sorted(corpus.fetch_debian(CORPUS_CACHE).glob("*.jpg"))
    assert len(found) == 13
    return found


def limits() -> imaging.Limits:
    return imaging.Limits(frozenset(LOADERS), 50_000_000, time.monotonic() + 60)


def by_libvips(original: bytes, fit: Fit, width: int, height: int | None) -> bytes:
    """The accurate path: libvips' JPEG loader at the same DCT scale, the same resize."""
    header = decode(original)
    place = imaging.geometry(
        header.width, header.height, imaging.Rendition(fit, width, height, "jpg", 85)
    )
    shrink = max(
        (
            f
            for f in (2, 4, 8)
            if header.width // f >= place.resize_width and header.height // f >= place.resize_height
        ),
        default=1,
    )
    image = pyvips.Image.new_from_buffer(original, "", shrink=shrink)
    image = image.thumbnail_image(place.resize_width, height=place.resize_height, size="force")
    image = image.crop(place.left, place.top, place.width, place.height)
    return bytes(image.jpegsave_buffer(Q=85, optimize_coding=True, keep=0))


# Its ICC profile is lcms's own, not sRGB IEC61966-2.1: libvips' loader applies it.
NEEDS_LIBVIPS = {"ColorfulCups.jpg"}


def test_the_corpus_comes_out_as_libvips_loader_makes_it(jpegs: list[Path]) -> None:
    worst = (1.0, "")
    for path in jpegs:
        original = path.read_bytes()
        # The codec is really used (the comparison is not libvips against itself).
        decoded = decoded_jpeg(original, decode(original), 8)
        assert (decoded is None) == (path.name in NEEDS_LIBVIPS), path.name
        shapes = [(Fit.WIDTH, width, None) for width in WIDTHS] + [(Fit.COVER, 300, 400)]
        for fit, width, height in shapes:
            ours = imaging.render(
                original, imaging.Rendition(fit, width, height, "jpg", 85), limits()
            )
            accurate = by_libvips(original, fit, width, height)
            assert (decode(ours).width, decode(ours).height) == (
                decode(accurate).width,
                decode(accurate).height,
            )
            score = ssim(ours, accurate)
            worst = min(worst, (score, f"{path.name} {fit.value} {width}x{height}"))
    assert worst[0] >= 0.995, worst


def test_rotated_and_greyscale_jpegs_take_the_codec_and_come_out_right() -> None:
    image = decode(photo())
    rotated = image.copy()
    rotated.set_type(pyvips.GValue.gint_type, "orientation", 6)  # "rotate 90 to view"
    grey = image.colourspace("b-w")
    for original, upright in (
        (bytes(rotated.jpegsave_buffer(Q=90)), image.rot90()),
        (bytes(grey.jpegsave_buffer(Q=90)), grey),
    ):
        assert decoded_jpeg(original, decode(original), 2) is not None
        made = imaging.render(
            original, imaging.Rendition(Fit.WIDTH, 400, None, "png", 85), limits()
        )
        height = round(upright.height * 400 / upright.width)
        expected = upright.thumbnail_image(400, height=height, size="force")
        assert ssim(made, bytes(expected.pngsave_buffer())) >= 0.98


def test_jpegs_libjpeg_turbo_should_not_decode_go_to_libvips() -> None:
    """CMYK, and a colour profile other than sRGB: libvips' loader (it applies them)."""
    cmyk = (pyvips.Image.black(64, 64, bands=4) + [0, 255, 255, 0]).cast("uchar")
    p3 = decode(photo()).icc_transform("p3", embedded=False, input_profile="srgb")
    for original in (
        bytes(cmyk.copy(interpretation="cmyk").jpegsave_buffer()),
        bytes(p3.jpegsave_buffer(Q=90)),
    ):
        assert decoded_jpeg(original, decode(original), 1) is None
