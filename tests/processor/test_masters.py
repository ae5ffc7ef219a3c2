"""Pre-shrunk masters: the outputs made from them match those made from the original."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import pyvips

from common.urls import Fit
from processor.imaging import LOADERS, Limits, Rendition, make_master, render, render_master
from tests.images import decode, mean_abs_difference, photo

LIMITS = Limits(frozenset(LOADERS), 50_000_000, time.monotonic() + 600)
CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus"


def large_photo() -> bytes:
    """2560x1600: the shared corpus when it is there, else the sample scaled up."""
    if (CORPUS / "Kite.jpg").exists():
        return (CORPUS / "Kite.jpg").read_bytes()
    return bytes(decode(photo()).resize(1.6).jpegsave_buffer(Q=90))


def test_master_short_side_and_cleanliness(tmp_path: Path) -> None:
    path = tmp_path / "m.v"
    assert make_master(large_photo(), 1000, LIMITS, path)
    master = pyvips.Image.new_from_file(str(path))
    assert min(master.width, master.height) >= 1000
    assert min(master.width, master.height) <= 1001
    assert master.interpretation == "srgb" and master.format == "uchar"
    assert master.get_typeof("icc-profile-data") == 0
    assert master.get_typeof("orientation") == 0 or master.get("orientation") == 1


def test_small_originals_get_no_master(tmp_path: Path) -> None:
    assert not make_master(photo(), 1000, LIMITS, tmp_path / "m.v")  # 1600x1000: short side 1000
    assert not (tmp_path / "m.v").exists()


@pytest.mark.parametrize(
    "rendition",
    [
        Rendition(Fit.WIDTH, 500, None, "png", 85),
        Rendition(Fit.WIDTH, 1000, None, "png", 85),
        Rendition(Fit.COVER, 600, 600, "png", 85),
        Rendition(Fit.COVER, 300, 400, "png", 85),
        Rendition(Fit.COVER, 1000, 1000, "png", 85),
        Rendition(Fit.COVER, 1000, 20, "png", 85),
    ],
)
def test_outputs_from_the_master_match_direct_ones(tmp_path: Path, rendition: Rendition) -> None:
    original = large_photo()
    path = tmp_path / "m.v"
    make_master(original, 1000, LIMITS, path)
    direct = decode(render(original, rendition, LIMITS))
    via_master = decode(render_master(path, rendition, LIMITS))
    assert (via_master.width, via_master.height) == (direct.width, direct.height)
    assert mean_abs_difference(via_master, direct) < 1.5


def test_masters_of_rotated_originals_are_upright(tmp_path: Path) -> None:
    image = decode(large_photo()).copy()
    image.set_type(pyvips.GValue.gint_type, "orientation", 6)
    tagged = bytes(image.jpegsave_buffer(Q=90))
    path = tmp_path / "m.v"
    assert make_master(tagged, 1000, LIMITS, path)
    out = decode(render_master(path, Rendition(Fit.WIDTH, 400, None, "png", 85), LIMITS))
    direct = decode(render(tagged, Rendition(Fit.WIDTH, 400, None, "png", 85), LIMITS))
    assert out.height > out.width
    assert mean_abs_difference(out, direct) < 1.5
