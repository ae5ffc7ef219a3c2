"""Pre-shrunk masters: outputs made from them match an independent reference (Pillow,
Lanczos, from the original), on images the repository ships or the test makes."""

from __future__ import annotations

import functools
import io
import math
import time
from pathlib import Path

import PIL.Image
import PIL.ImageOps
import pytest
import pyvips

from common.formats import LOADERS
from common.urls import Fit
from processor.imaging import (
    Limits,
    Rendition,
    make_master,
    render_master,
)
from tests.support.images import decode, mean_abs_difference, photo

LIMITS = Limits(frozenset(LOADERS), 50_000_000, time.monotonic() + 600)


@functools.cache
def large_photo() -> bytes:
    """2560x1600: the sample photograph (1600x1000) scaled up, so that the
    master is made with a 1/2 shrink-on-load."""
    return bytes(decode(photo()).resize(1.6).jpegsave_buffer(Q=92))


def pillow_reference(original: bytes, rendition: Rendition) -> pyvips.Image:
    """The output as Pillow makes it from the original: Lanczos, centre crop."""
    assert rendition.width is not None
    with PIL.Image.open(io.BytesIO(original)) as opened:
        image = (PIL.ImageOps.exif_transpose(opened) or opened).convert("RGB")
    if rendition.fit is Fit.WIDTH:
        height = math.floor(image.height * rendition.width / image.width + 0.5)
        out = image.resize((rendition.width, height), PIL.Image.Resampling.LANCZOS)
    else:
        assert rendition.height is not None
        box = (rendition.width, rendition.height)
        out = PIL.ImageOps.fit(image, box, PIL.Image.Resampling.LANCZOS, centering=(0.5, 0.5))
    buffer = io.BytesIO()
    out.save(buffer, "PNG")
    return decode(buffer.getvalue())


def test_master_long_side_and_cleanliness(tmp_path: Path) -> None:
    path = tmp_path / "m.v"
    assert make_master(large_photo(), 1000, LIMITS, path)
    master = pyvips.Image.new_from_file(str(path))
    assert (master.width, master.height) == (1280, 800)  # 2560x1600 at 1/2, no resampling
    assert master.interpretation == "srgb" and master.format == "uchar"
    assert master.get_typeof("icc-profile-data") == 0
    assert master.get_typeof("orientation") == 0 or master.get("orientation") == 1


def test_small_originals_get_no_master(tmp_path: Path) -> None:
    small = bytes(decode(photo()).resize(0.6).jpegsave_buffer(Q=90))  # 960x600
    assert not make_master(small, 1000, LIMITS, tmp_path / "m.v")
    assert not (tmp_path / "m.v").exists()


@pytest.mark.parametrize(
    "rendition",
    [
        Rendition(Fit.WIDTH, 100, None, "png", 85),
        Rendition(Fit.WIDTH, 500, None, "png", 85),
        Rendition(Fit.WIDTH, 1000, None, "png", 85),
        Rendition(Fit.COVER, 600, 600, "png", 85),
        Rendition(Fit.COVER, 300, 400, "png", 85),
        Rendition(Fit.COVER, 1000, 20, "png", 85),
    ],
)
@pytest.mark.parametrize("original", [large_photo, photo], ids=["2560x1600", "1600x1000"])
def test_outputs_from_the_master_match_pillow_from_the_original(
    tmp_path: Path, rendition: Rendition, original: functools._lru_cache_wrapper[bytes]
) -> None:
    data = original()
    path = tmp_path / "m.v"
    assert make_master(data, 1000, LIMITS, path)
    ours = decode(from_master(path, rendition))  # the master covers every one of these
    reference = pillow_reference(data, rendition)
    assert (ours.width, ours.height) == (reference.width, reference.height)
    assert mean_abs_difference(ours, reference) < 2.0


def test_crops_the_master_cannot_cover_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.v"
    assert make_master(large_photo(), 1000, LIMITS, path)  # 1280x800
    for refused in (
        Rendition(Fit.COVER, 1000, 1000, "jpg", 85),
        Rendition(Fit.COVER, 20, 1000, "jpg", 85),
        Rendition(Fit.NONE, None, None, "jpg", 85),
    ):
        assert render_master(path, refused, LIMITS) is None  # made from the original instead
    assert decode(from_master(path, Rendition(Fit.COVER, 800, 800, "jpg", 85))).width == 800


def test_masters_of_rotated_originals_are_upright(tmp_path: Path) -> None:
    image = decode(large_photo()).copy()
    image.set_type(pyvips.GValue.gint_type, "orientation", 6)
    tagged = bytes(image.jpegsave_buffer(Q=90))
    path = tmp_path / "m.v"
    assert make_master(tagged, 1000, LIMITS, path)
    rendition = Rendition(Fit.WIDTH, 400, None, "png", 85)
    out = decode(from_master(path, rendition))
    assert out.height > out.width
    assert mean_abs_difference(out, pillow_reference(tagged, rendition)) < 2.0


def from_master(path: Path, rendition: Rendition) -> bytes:
    made = render_master(path, rendition, LIMITS)
    assert made is not None
    return made


def test_a_master_evicted_meanwhile_is_not_an_error(tmp_path: Path) -> None:
    path = tmp_path / "m.v"
    assert make_master(large_photo(), 1000, LIMITS, path)
    rendition = Rendition(Fit.WIDTH, 400, None, "png", 85)
    assert render_master(path, rendition, LIMITS) is not None
    path.unlink()  # the janitor's doing, between a look and a read
    assert render_master(path, rendition, LIMITS) is None  # the caller uses the original


def test_a_master_opened_before_its_eviction_is_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "m.v"
    assert make_master(large_photo(), 1000, LIMITS, path)
    opened = pyvips.Image.new_from_file(str(path))
    path.unlink()
    assert opened.avg() > 0  # its pixels are still there
