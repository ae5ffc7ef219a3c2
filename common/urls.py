"""The URL grammar: `/<model>/<imageType>/<id>/<output>`.

`output` is a shape, at most one placement suffix, an optional quality suffix,
then the extension, in this order:

    <shape>[-fit|-pad[-<rrggbb>]|-<gravity>|-smart][-q<Q>].<ext>

Shapes: `w<W>` (width W), `h<H>` (height H), `x<N>` (an N x N box),
`<W>x<H>` (a W x H box), `full_size`. A box is covered and cropped at its
centre unless a suffix says otherwise: `-fit` (inside the box, no crop),
`-pad` (inside, then padded to the box with white, or transparent where the
format has alpha; `-pad-<rrggbb>` with that colour), `-<gravity>` (crop
anchored at n, s, e, w, ne, nw, se or sw) or `-smart` (crop where libvips'
attention finds the interest). `-q<Q>` (or `-c<Q>`, the same) is the
encoder's quality. Numbers are written without leading zeros. Names that
mean the same output (`w120.jpeg`, `w120-c85.jpg`, `120x120.png` and
`x120-q7.png`, `x50-center.jpg` and `x50.jpg`...) share one canonical name,
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
from common.formats import CONTENT_TYPES, EXTENSION_ALIASES, FORMATS_WITH_ALPHA, LOSSLESS_FORMATS
from common.keys import ImageRef, OutputRef

MAX_SEGMENT_CHARS = 128
MAX_PATH_CHARS = 1024
MAX_SOURCE_CHARS = 2048  # a `source` URL; each distinct one is an original of its own
SEGMENT = re.compile(rf"[A-Za-z0-9_-]{{1,{MAX_SEGMENT_CHARS}}}")
_NUMBER = r"[1-9][0-9]{0,5}"
_SHAPE = (
    rf"(?:w(?P<w>{_NUMBER})|h(?P<h>{_NUMBER})|x(?P<n>{_NUMBER})"
    rf"|(?P<bw>{_NUMBER})x(?P<bh>{_NUMBER})|(?P<full>full_size))"
)
_PLACEMENT = (
    r"(?:-(?P<placement>fit|pad(?:-(?P<colour>[0-9a-fA-F]{6}))?|[nsew]|n[ew]|s[ew]|center|smart))"
)
OUTPUT = re.compile(rf"{_SHAPE}{_PLACEMENT}?(?:-[qc](?P<q>{_NUMBER}))?\.(?P<ext>[a-z0-9]+)")
GRAMMAR = "<shape>[-fit|-pad[-<rrggbb>]|-<gravity>|-smart][-q<Q>].<ext>"


WHITE = "ffffff"


class Fit(StrEnum):
    WIDTH = "width"  # w<W>: height by aspect ratio
    HEIGHT = "height"  # h<H>: width by aspect ratio, at most maximum_width
    COVER = "cover"  # a box: scale to cover it, crop at the gravity
    INSIDE = "inside"  # a box, -fit: scale to fit inside it, no crop
    PAD = "pad"  # a box, -pad: fit inside it, then pad to it
    NONE = "none"  # full_size: no resize

    @property
    def is_box(self) -> bool:
        return self in (Fit.COVER, Fit.INSIDE, Fit.PAD)


class Gravity(StrEnum):
    """Where a cover crop is anchored (the side or corner kept), or smart."""

    CENTRE = "center"
    NORTH = "n"
    SOUTH = "s"
    EAST = "e"
    WEST = "w"
    NORTH_EAST = "ne"
    NORTH_WEST = "nw"
    SOUTH_EAST = "se"
    SOUTH_WEST = "sw"
    SMART = "smart"  # libvips' attention: where the picture's interest is


@dataclasses.dataclass(frozen=True)
class OutputSpec:
    fit: Fit
    width: int | None
    height: int | None
    quality: int | None
    format: str  # canonical extension: jpg, png, webp, gif, avif
    gravity: Gravity = Gravity.CENTRE  # COVER only
    background: str = ""  # PAD only: rrggbb, or "": the format's default (pad_colour)

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
        raise BadRequest(_output_problem(name[:MAX_SEGMENT_CHARS]))
    quality = int(match["q"]) if match["q"] else None
    if quality is not None and quality > 100:
        raise BadRequest("quality must be 1-100")
    ext = EXTENSION_ALIASES.get(match["ext"], match["ext"])
    placement = match["placement"] or ""
    if match["w"] or match["h"] or match["full"]:
        if placement:
            raise BadRequest(f"-{placement} needs a box (x<N> or <W>x<H>), not {name!r}")
        if match["w"]:
            return OutputSpec(Fit.WIDTH, int(match["w"]), None, quality, ext)
        if match["h"]:
            return OutputSpec(Fit.HEIGHT, None, int(match["h"]), quality, ext)
        return OutputSpec(Fit.NONE, None, None, quality, ext)
    width = int(match["n"] or match["bw"])
    height = int(match["n"] or match["bh"])
    if placement == "fit":
        return OutputSpec(Fit.INSIDE, width, height, quality, ext)
    if placement.startswith("pad"):
        colour = (match["colour"] or "").lower()
        return OutputSpec(Fit.PAD, width, height, quality, ext, background=colour)
    gravity = Gravity(placement) if placement else Gravity.CENTRE
    return OutputSpec(Fit.COVER, width, height, quality, ext, gravity=gravity)


def _output_problem(name: str) -> str:
    """Why `name` is not an output, as precisely as can be said."""
    stem = name.rsplit(".", 1)[0]
    suffixes = stem.split("-")[1:]
    placements = [s for s in suffixes if not re.fullmatch(r"[qc][0-9]+", s)]
    quality_at = [i for i, s in enumerate(suffixes) if re.fullmatch(r"[qc][0-9]+", s)]
    if quality_at and quality_at[0] < len(suffixes) - 1:
        why = "the quality suffix comes last"
    elif len(placements) > 1 and not (placements[0] == "pad" and len(placements) == 2):
        why = "one of -fit, -pad, a gravity or -smart at most"
    else:
        why = "not in the grammar"
    return f"unknown output {name!r} ({why}): outputs are {GRAMMAR}"


def pad_colour(output_format: str, background: str) -> str | None:
    """The colour a -pad output is padded with (rrggbb), None for transparent."""
    if background:
        return background
    return None if output_format in FORMATS_WITH_ALPHA else WHITE


def effective_quality(output: OutputSpec, default_quality: Mapping[str, int]) -> int:
    """The encoder quality of `output`: its own, else the format's default, else 100."""
    return output.quality or default_quality.get(output.format, 100)


def canonical_name(output: OutputSpec, default_quality: Mapping[str, int]) -> str:
    """The one name of an output: `x<N>` for a square box, no `-center` (the bare
    crop), `-pad` alone for the format's default colour, `-q<Q>` only when Q is
    not the format's default, no quality for a lossless format, one extension
    per format."""
    if output.fit is Fit.WIDTH:
        size = f"w{output.width}"
    elif output.fit is Fit.HEIGHT:
        size = f"h{output.height}"
    elif output.fit.is_box:
        square = output.width == output.height
        size = f"x{output.width}" if square else f"{output.width}x{output.height}"
    else:
        size = "full_size"
    size += _placement_suffix(output)
    quality = effective_quality(output, default_quality)
    default = default_quality.get(output.format, 100)
    suffix = "" if output.format in LOSSLESS_FORMATS or quality == default else f"-q{quality}"
    return f"{size}{suffix}.{output.format}"


def _placement_suffix(output: OutputSpec) -> str:
    if output.fit is Fit.INSIDE:
        return "-fit"
    if output.fit is Fit.PAD:
        colour = output.background
        default = pad_colour(output.format, "")
        return "-pad" if colour in ("", default) else f"-pad-{colour}"
    if output.fit is Fit.COVER and output.gravity is not Gravity.CENTRE:
        return f"-{output.gravity.value}"
    return ""


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
            if output.fit is Fit.PAD:  # padded as the format asked for would be
                colour = pad_colour("jpg", output.background) or ""
                output = dataclasses.replace(output, background=colour)
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
