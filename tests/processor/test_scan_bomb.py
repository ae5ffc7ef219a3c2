"""A JPEG's scans are counted before it is decoded (hardening, third pass)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import pyvips

from common.errors import ImageTooLarge
from common.formats import LOADERS
from common.urls import Fit
from processor import imaging
from processor.imaging import Limits, Rendition
from testkit.jpeg_bomb import scan_bomb
from tests.support.images import decode, photo

W100 = Rendition(Fit.WIDTH, 100, None, "jpg", 80)


def limits(max_jpeg_scans: int) -> Limits:
    return Limits(frozenset(LOADERS), 50_000_000, time.monotonic() + 60, 100, 0, max_jpeg_scans)


def test_the_scan_bomb_is_a_legal_jpeg_of_2648_scans() -> None:
    bomb = scan_bomb(64)
    assert imaging.jpeg_scans(bomb) == 2648  # one DC scan, its refinement, 3 x 63 x 14
    out = decode(imaging.render(bomb, W100, limits(0)))  # decodes (slowly when large)
    assert (out.width, out.height) == (64, 64)


def test_a_jpeg_of_more_scans_than_the_bound_is_refused_before_any_decode(tmp_path: Path) -> None:
    with pytest.raises(ImageTooLarge, match="2648 scans, above max_source_jpeg_scans"):
        imaging.render(scan_bomb(1000), W100, limits(64))
    with pytest.raises(ImageTooLarge, match="scans"):
        imaging.make_master(scan_bomb(1000), 500, limits(64), tmp_path / "master.v")


def test_ordinary_progressive_and_baseline_jpegs_pass() -> None:
    image = pyvips.Image.new_from_buffer(photo(), "")
    progressive = image.jpegsave_buffer(Q=80, interlace=True)
    optimised = image.jpegsave_buffer(
        Q=80, interlace=True, trellis_quant=True, optimize_scans=True, quant_table=3
    )
    for jpeg in (photo(), progressive, optimised):
        assert 1 <= imaging.jpeg_scans(jpeg) <= 12
        assert decode(imaging.render(jpeg, W100, limits(64))).width == 100


def test_scans_are_counted_from_the_first_scan_not_in_the_headers() -> None:
    """An SOS marker's bytes inside a header segment (a comment) are not a scan."""
    jpeg = photo()
    comment = b"\xff\xfe" + (2 + 6).to_bytes(2, "big") + b"\xff\xda" * 3
    with_comment = jpeg[:2] + comment + jpeg[2:]
    assert imaging.jpeg_scans(with_comment) == imaging.jpeg_scans(jpeg)
