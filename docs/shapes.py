"""Draw docs/shapes.png: one sample original as the URL grammar's shapes.

    .venv/bin/python -m docs.shapes

Each output is made by the processor's own code (processor/imaging/) from
samples/sample/image/3/original.jpg (700x1000, a kite in the upper half) and
shown at its real size, on a grey card so that a -pad's white is seen, with
its name under it.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

import pyvips

from common.formats import LOADERS
from common.urls import Fit, parse_output
from processor import imaging

REPO = Path(__file__).resolve().parent.parent
ORIGINAL = REPO / "samples" / "sample" / "image" / "3" / "original.jpg"
PICTURE = REPO / "docs" / "shapes.png"
SHAPES = ["x300", "x300-n", "x300-smart", "300x200-fit", "300x200-pad", "h200"]
GAP = 16
CARD = [236, 236, 236]


def made(original: bytes, shape: str) -> pyvips.Image:
    spec = parse_output(f"{shape}.jpg")
    rendition = imaging.Rendition(
        spec.fit,
        1000 if spec.fit is Fit.HEIGHT else spec.width,  # maximum_width, as jobs say
        spec.height,
        "jpg",
        90,
        gravity=spec.gravity,
        background=spec.background,
    )
    limits = imaging.Limits(frozenset(LOADERS), 100_000_000, time.monotonic() + 60)
    return pyvips.Image.new_from_buffer(imaging.render(original, rendition, limits), "")


def labelled(image: pyvips.Image, label: str) -> pyvips.Image:
    """`image` on a card with `label` centred under it."""
    mask = pyvips.Image.text(label, dpi=110, font="sans")
    text = mask.ifthenelse([40, 40, 40], CARD, blend=True)
    width = max(image.width, text.width)
    card = pyvips.Image.black(width, image.height + GAP // 2 + text.height, bands=3) + CARD
    card = card.cast("uchar").copy(interpretation="srgb")
    card = card.insert(image, (width - image.width) // 2, 0)
    return card.insert(text, (width - text.width) // 2, image.height + GAP // 2)


def joined(images: list[pyvips.Image], direction: str) -> pyvips.Image:
    """`images` side by side (or one under the other), top (or left) aligned."""
    return functools.reduce(
        lambda a, b: a.join(b, direction, expand=True, shim=GAP, background=CARD), images
    )


def main() -> None:
    original = ORIGINAL.read_bytes()
    source = pyvips.Image.new_from_buffer(original, "")
    panels = [labelled(source.thumbnail_image(300, height=300), "the original, 700x1000")]
    panels += [labelled(made(original, shape), f"{shape}.jpg") for shape in SHAPES]
    picture = joined(
        [joined(panels[:4], "horizontal"), joined(panels[4:], "horizontal")], "vertical"
    )
    picture = picture.embed(GAP, GAP, picture.width + 2 * GAP, picture.height + 2 * GAP,
                            extend="background", background=CARD)  # fmt: skip
    picture.cast("uchar").pngsave(str(PICTURE), compression=9)
    print(f"{PICTURE.relative_to(REPO)}: {picture.width}x{picture.height}")


if __name__ == "__main__":
    main()
