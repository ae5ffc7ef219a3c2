"""Resize and encode with libvips. Only this package imports pyvips.

Its modules follow an output's way: decode (the header checked first),
geometry (pure), resize, colour, encode; master keeps pre-shrunk originals."""

from __future__ import annotations

from pathlib import Path

import pyvips

from common.urls import Fit
from processor.imaging.decode import (
    check_header,
    frames_kept,
    jpeg_scans,
    lossless,
    translated_errors,
    upright_size,
)
from processor.imaging.geometry import (
    Encoding,
    Geometry,
    Limits,
    Rendition,
    check_output_pixels,
    geometry,
    output_size,
)
from processor.imaging.master import make_master, open_master
from processor.imaging.resize import encoded, place_box, resize_original


def libvips_version() -> str:
    """The libvips this process runs, as major.minor.micro."""
    return ".".join(str(pyvips.version(part)) for part in range(3))


def configure(threads: int) -> None:
    """Per-process libvips settings: the processor runs one job at a time and
    every original is new, so libvips' operation cache only costs memory; and
    a cached operation would outlive the Python object of its deadline's eval
    handler (decode.abandon_after): libvips calling it then aborts the process."""
    pyvips.cache_set_max(0)
    pyvips.concurrency_set(threads)


def render(original: bytes, rendition: Rendition, limits: Limits) -> bytes:
    """Return `original` resized and encoded as `rendition` asks, within `limits`."""
    with translated_errors(limits):
        header = check_header(original, limits)
        frames = frames_kept(header, rendition, limits)
        width, height = output_size(*upright_size(header), rendition)
        check_output_pixels(width, height, frames, rendition, limits)
        image = resize_original(original, header, rendition, frames)
        return encoded(image, rendition, limits, lossless(original, header))


def render_master(master: Path, rendition: Rendition, limits: Limits) -> bytes | None:
    """Like render, from a master written by make_master; None when the master
    cannot make this output: full_size, an output that needs more pixels than
    the master has (a portrait's w1000), or a master that is gone (the janitor
    may evict it at any time). The caller then renders from the original."""
    if rendition.fit is Fit.NONE:
        return None
    with translated_errors(limits):
        opened = open_master(master)
        if opened is None:
            return None
        image, source = opened
        place = geometry(source.width, source.height, rendition)
        if place.resize_width > image.width or place.resize_height > image.height:
            return None
        check_output_pixels(place.width, place.height, 1, rendition, limits)
        # Resized from the image opened above: a master removed from now on is
        # still read whole (its pages stay mapped until they are released).
        image = image.thumbnail_image(place.resize_width, height=place.resize_height, size="force")
        return encoded(place_box(image, place, rendition), rendition, limits, source.lossless)


__all__ = [
    "Encoding",
    "Geometry",
    "Limits",
    "Rendition",
    "configure",
    "geometry",
    "jpeg_scans",
    "libvips_version",
    "make_master",
    "render",
    "render_master",
]
