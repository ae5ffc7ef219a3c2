"""The original service's ImageMagick recipe, as one command line, with the
ImageMagick equivalents of the shapes added since.

`convert -strip -flatten`, then the shape's geometry, then `-background
rgba(255,255,255,1) -quality Q`:
- `-resize W` (w<W>), `-resize WxH^ -gravity center -extent WxH` (x<N>,
  <W>x<H>) or nothing (full_size): the original service's;
- `-resize xH` (h<H>), `-resize WxH` (-fit), `-resize WxH -background <colour>
  -gravity center -extent WxH` (-pad, `none` for a transparent pad),
  `-resize WxH^ -gravity <North...> -extent WxH` (-n, -ne...): ours.
`-smart` has no ImageMagick equivalent (its tests compare with libvips' own
attention crop). Used by bench/quality.py and by the tests that compare our
geometry with ImageMagick's.
"""

from __future__ import annotations

from pathlib import Path

from common.urls import Fit, Gravity, OutputSpec, pad_colour, parse_output

QUALITY = 75  # the original service's -quality
GRAVITIES = {
    Gravity.CENTRE: "center",
    Gravity.NORTH: "North",
    Gravity.SOUTH: "South",
    Gravity.EAST: "East",
    Gravity.WEST: "West",
    Gravity.NORTH_EAST: "NorthEast",
    Gravity.NORTH_WEST: "NorthWest",
    Gravity.SOUTH_EAST: "SouthEast",
    Gravity.SOUTH_WEST: "SouthWest",
}


def command(
    source: Path, output: str, convert: str = "convert", extra: tuple[str, ...] = ()
) -> list[str]:
    """The recipe making `output` (e.g. `x600.jpg`) from `source`, written to stdout;
    `extra` options go right after the input (e.g. `-auto-orient`)."""
    spec = parse_output(output)
    return [
        convert, str(source), *extra, "-strip", "-flatten", *geometry(spec),
        "-background", "rgba(255,255,255,1)", "-quality", str(QUALITY), f"{spec.format}:-",
    ]  # fmt: skip


def geometry(spec: OutputSpec) -> list[str]:
    """ImageMagick's options for the shape of `spec`."""
    box = f"{spec.width}x{spec.height}"
    if spec.fit is Fit.WIDTH:
        return ["-resize", str(spec.width)]
    if spec.fit is Fit.HEIGHT:
        return ["-resize", f"x{spec.height}"]
    if spec.fit is Fit.INSIDE:
        return ["-resize", box]
    if spec.fit is Fit.PAD:
        colour = pad_colour(spec.format, spec.background)
        background = "none" if colour is None else f"#{colour}"
        return ["-resize", box, "-background", background, "-gravity", "center", "-extent", box]
    if spec.fit is Fit.COVER:
        if spec.gravity is Gravity.SMART:
            raise ValueError("-smart has no ImageMagick equivalent")
        return ["-resize", f"{box}^", "-gravity", GRAVITIES[spec.gravity], "-extent", box]
    return []
