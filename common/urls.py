"""The URL grammar: `/<model>/<imageType>/<id>/<output>`.

`output` is `w<W>`, `x<N>`, `<W>x<H>` or `full_size`, an optional quality
suffix `-q<Q>` (or `-c<Q>`, the same), then `.<ext>`. Numbers are written
without leading zeros. Names that mean the same output (`w120.jpeg`,
`w120-c85.jpg`, `120x120.png` and `x120-q7.png`...) share one canonical name,
which is the cache key and the object key: see `canonical_name`.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
import re
from collections.abc import Mapping
from enum import StrEnum

from common.errors import BadRequest, NotAcceptable, UriTooLong
from common.keys import ImageRef, OutputRef

MAX_SEGMENT_CHARS = 128
MAX_PATH_CHARS = 1024
MAX_SOURCE_CHARS = 2048  # a `source` URL; each distinct one is an original of its own
SEGMENT = re.compile(rf"[A-Za-z0-9_-]{{1,{MAX_SEGMENT_CHARS}}}")
_NUMBER = r"[1-9][0-9]{0,5}"
OUTPUT = re.compile(
    rf"(?:w(?P<w>{_NUMBER})|x(?P<n>{_NUMBER})|(?P<bw>{_NUMBER})x(?P<bh>{_NUMBER})|(?P<full>full_size))"
    rf"(?:-[qc](?P<q>{_NUMBER}))?"
    r"\.(?P<ext>[a-z0-9]+)"
)
EXTENSION_ALIASES = {"jpeg": "jpg"}
LOSSLESS_FORMATS = frozenset({"png", "gif"})  # quality means nothing to them
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
    varies: bool = False  # the format served depends on the Accept header (Vary: Accept)

    @functools.cached_property
    def image(self) -> ImageRef:
        """The image asked for (an explicit `source` is another original: common/keys.py)."""
        return ImageRef.of(self.model, self.image_type, self.id, self.source)

    @functools.cached_property
    def ref(self) -> OutputRef:
        """The output asked for: its cache key, object key... (common/keys.py)."""
        return self.image.output(self.output_name)

    @functools.cached_property
    def cache_key(self) -> str:
        """Relative path of the output in every store (local cache, object store)."""
        return self.ref.cache_key


def parse_image_path(path: str) -> ImageRef:
    """`/<model>/<imageType>/<id>`: one image (a purge's target); BadRequest otherwise."""
    segments = path.split("/")
    if len(segments) != 4 or segments[0] or not all(SEGMENT.fullmatch(s) for s in segments[1:]):
        raise BadRequest("an image is /<model>/<imageType>/<id>")
    return ImageRef(segments[1], segments[2], segments[3])


def parse_output(name: str) -> OutputSpec:
    match = OUTPUT.fullmatch(name) if len(name) <= MAX_SEGMENT_CHARS else None
    if match is None:
        raise BadRequest(f"unknown output {name[:MAX_SEGMENT_CHARS]!r}")
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


def effective_quality(output: OutputSpec, default_quality: Mapping[str, int]) -> int:
    """The encoder quality of `output`: its own, else the format's default, else 100."""
    return output.quality or default_quality.get(output.format, 100)


def canonical_name(output: OutputSpec, default_quality: Mapping[str, int]) -> str:
    """The one name of an output: `x<N>` for a square, `-q<Q>` only when Q is not
    the format's default, no quality for a lossless format, one extension per format."""
    if output.fit is Fit.WIDTH:
        size = f"w{output.width}"
    elif output.fit is Fit.COVER:
        square = output.width == output.height
        size = f"x{output.width}" if square else f"{output.width}x{output.height}"
    else:
        size = "full_size"
    quality = effective_quality(output, default_quality)
    default = default_quality.get(output.format, 100)
    suffix = "" if output.format in LOSSLESS_FORMATS or quality == default else f"-q{quality}"
    return f"{size}{suffix}.{output.format}"


def parse_path(
    path: str, source: str | None = None, default_quality: Mapping[str, int] | None = None
) -> ImageRequest:
    """Parse a request path; raise BadRequest when it is not in the grammar (UriTooLong
    past MAX_PATH_CHARS). The request's output name is the canonical one."""
    if len(path) > MAX_PATH_CHARS:
        raise UriTooLong(f"the path is longer than {MAX_PATH_CHARS} characters")
    if source is not None and len(source) > MAX_SOURCE_CHARS:
        raise UriTooLong(f"the source URL is longer than {MAX_SOURCE_CHARS} characters")
    segments = path.split("/")
    if len(segments) != 5 or segments[0] != "":
        raise BadRequest("expected /<model>/<imageType>/<id>/<output>")
    model, image_type, image_id, output_name = segments[1:]
    for segment in (model, image_type, image_id):
        if not SEGMENT.fullmatch(segment):
            raise BadRequest(_segment_problem(segment))
    output = parse_output(output_name)
    name = canonical_name(output, default_quality or {})
    return ImageRequest(model, image_type, image_id, name, output, source)


def output_matches(name: str, patterns: list[str]) -> bool:
    """True when the canonical output `name` matches one of `patterns`
    (output names where `*` stands for any run of characters)."""
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


NEGOTIABLE_FORMATS = frozenset({"webp", "avif"})


def negotiate(
    request: ImageRequest,
    accept: str | None,
    auto_formats: list[str],
    default_quality: Mapping[str, int],
) -> ImageRequest:
    """`request` answered in the first of `auto_formats` that the Accept header
    allows, when it asked for jpg; every such request varies with Accept, even
    when the format stays. An explicit `-q` is kept; without one, the served
    format's default quality applies."""
    if not auto_formats or request.output.format != "jpg":
        return request
    accepted = _accepted_types(accept or "")
    for fmt in auto_formats:
        if CONTENT_TYPES[fmt] in accepted:
            output = dataclasses.replace(request.output, format=fmt)
            name = canonical_name(output, default_quality)
            return dataclasses.replace(request, output=output, output_name=name, varies=True)
    return dataclasses.replace(request, varies=True)


def _accepted_types(accept: str) -> set[str]:
    """The media types an Accept header names explicitly, without those given q=0."""
    types = set()
    for item in accept.split(","):
        media, *params = (part.strip() for part in item.split(";"))
        if not any(p.replace(" ", "") in ("q=0", "q=0.0", "q=0.00", "q=0.000") for p in params):
            types.add(media.lower())
    return types


def _segment_problem(segment: str) -> str:
    if len(segment) > MAX_SEGMENT_CHARS:
        return f"a path segment is longer than {MAX_SEGMENT_CHARS} characters"
    return f"invalid path segment {segment[:MAX_SEGMENT_CHARS]!r}"


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
