"""The URL grammar: `/<model>/<imageType>/<id>/<output>`.

`output` is `w<W>`, `x<N>`, `<W>x<H>` or `full_size`, an optional quality
suffix `-q<Q>` (or `-c<Q>`, the same), then `.<ext>`. Numbers are written
without leading zeros so that one output has one URL and one cache file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from enum import StrEnum

from common.errors import BadRequest, NotAcceptable

SEGMENT = re.compile(r"[A-Za-z0-9_-]+")
_NUMBER = r"[1-9][0-9]{0,5}"
OUTPUT = re.compile(
    rf"(?:w(?P<w>{_NUMBER})|x(?P<n>{_NUMBER})|(?P<bw>{_NUMBER})x(?P<bh>{_NUMBER})|(?P<full>full_size))"
    rf"(?:-[qc](?P<q>{_NUMBER}))?"
    r"\.(?P<ext>[a-z0-9]+)"
)
EXTENSION_ALIASES = {"jpeg": "jpg"}
CONTENT_TYPES = {
    "jpg": "image/jpeg",
    "png": "image/png",
    "webp": "image/webp",
    "gif": "image/gif",
    "avif": "image/avif",
}


class Fit(StrEnum):
    WIDTH = "width"  # height by aspect ratio, never upscaled
    COVER = "cover"  # exact box: scale to cover, centre crop
    NONE = "none"  # full_size: no resize


@dataclasses.dataclass(frozen=True)
class OutputSpec:
    fit: Fit
    width: int | None
    height: int | None
    quality: int | None
    format: str  # canonical extension: jpg, png, webp, gif, avif

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.format]


@dataclasses.dataclass(frozen=True)
class ImageRequest:
    model: str
    image_type: str
    id: str
    output_name: str
    output: OutputSpec
    source: str | None  # the `source` query parameter, when given

    @property
    def cache_key(self) -> str:
        """Relative path of the output in every store (local cache, object store).

        Laid out like the URL path; an explicit `source` is a different original,
        so it gets a directory of its own named by its hash.
        """
        parts = [self.model, self.image_type, self.id]
        if self.source is not None:
            parts.append("src-" + hashlib.sha256(self.source.encode()).hexdigest()[:24])
        parts.append(self.output_name)
        return "/".join(parts)


def parse_output(name: str) -> OutputSpec:
    match = OUTPUT.fullmatch(name)
    if match is None:
        raise BadRequest(f"unknown output {name!r}")
    quality = int(match["q"]) if match["q"] else None
    if quality is not None and quality > 100:
        raise BadRequest("quality must be 1-100")
    ext = EXTENSION_ALIASES.get(match["ext"], match["ext"])
    if match["w"]:
        return OutputSpec(Fit.WIDTH, int(match["w"]), None, quality, ext)
    if match["n"]:
        side = int(match["n"])
        return OutputSpec(Fit.COVER, side, side, quality, ext)
    if match["bw"]:
        return OutputSpec(Fit.COVER, int(match["bw"]), int(match["bh"]), quality, ext)
    return OutputSpec(Fit.NONE, None, None, quality, ext)


def parse_path(path: str, source: str | None = None) -> ImageRequest:
    """Parse a request path; raise BadRequest when it is not in the grammar."""
    segments = path.split("/")
    if len(segments) != 5 or segments[0] != "":
        raise BadRequest("expected /<model>/<imageType>/<id>/<output>")
    model, image_type, image_id, output_name = segments[1:]
    for segment in (model, image_type, image_id):
        if not SEGMENT.fullmatch(segment):
            raise BadRequest(f"invalid path segment {segment!r}")
    output = parse_output(output_name)
    return ImageRequest(model, image_type, image_id, output_name, output, source)


def check_allowed(
    output: OutputSpec, whitelisted_extensions: list[str], maximum_width: int
) -> None:
    """Raise NotAcceptable for an output this deployment does not serve."""
    allowed = {EXTENSION_ALIASES.get(ext, ext) for ext in whitelisted_extensions}
    if output.format not in allowed or output.format not in CONTENT_TYPES:
        raise NotAcceptable(f"extension {output.format!r} is not served")
    for side in (output.width, output.height):
        if side is not None and side > maximum_width:
            raise NotAcceptable(f"requested size {side} is above maximum_width {maximum_width}")
