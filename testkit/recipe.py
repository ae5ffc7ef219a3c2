"""The original service's ImageMagick recipe, as one command line.

`convert -strip -flatten`, then `-resize W` (w<W>), `-resize WxH^ -gravity
center -extent WxH` (x<N>, <W>x<H>) or nothing (full_size), then
`-background rgba(255,255,255,1) -quality Q`. Used by bench/quality.py and by
the tests that compare our geometry with it.
"""

from __future__ import annotations

from pathlib import Path

from common.urls import Fit, parse_output

QUALITY = 75  # the original service's -quality


def command(
    source: Path, output: str, convert: str = "convert", extra: tuple[str, ...] = ()
) -> list[str]:
    """The recipe making `output` (e.g. `x600.jpg`) from `source`, written to stdout;
    `extra` options go right after the input (e.g. `-auto-orient`)."""
    spec = parse_output(output)
    if spec.fit is Fit.WIDTH:
        geometry = ["-resize", str(spec.width)]
    elif spec.fit is Fit.COVER:
        box = f"{spec.width}x{spec.height}"
        geometry = ["-resize", f"{box}^", "-gravity", "center", "-extent", box]
    else:
        geometry = []
    return [
        convert, str(source), *extra, "-strip", "-flatten", *geometry,
        "-background", "rgba(255,255,255,1)", "-quality", str(QUALITY), f"{spec.format}:-",
    ]  # fmt: skip
