"""Property-based: no input to the URL grammar is anything but parsed or a 400."""

from __future__ import annotations

import dataclasses

from hypothesis import given
from hypothesis import strategies as st

from common.errors import BadRequest, NotAcceptable
from common.formats import LOSSLESS_FORMATS
from common.urls import (
    SEGMENT,
    Gravity,
    canonical_name,
    check_allowed,
    pad_colour,
    parse_output,
    parse_path,
)

segment = st.from_regex(SEGMENT, fullmatch=True)


@given(st.text(max_size=120))
def test_any_text_parses_or_is_a_bad_request(path: str) -> None:
    try:
        request = parse_path(path)
    except BadRequest:
        return
    assert ".." not in request.cache_key
    assert not request.cache_key.startswith("/")
    assert len(request.cache_key.split("/")) == 4


# Near the grammar, often in it: real sizes, real formats and their aliases, now and
# then a number or an extension out of range.
near_output = st.from_regex(
    r"(w[1-9][0-9]{0,2}|h[1-9][0-9]{0,2}|x[1-9][0-9]{0,2}|[1-9][0-9]{0,2}x[1-9][0-9]{0,2}"
    r"|full_size|w0[0-9]{1,3}|w[1-9][0-9]{3,5})"  # a leading zero (400), too wide (406)
    # Placements, alone, doubled or after the quality (400), on any shape (400 but boxes).
    r"(-(fit|pad|pad-[0-9a-fA-F]{6}|pad-[0-9a-z]{3,7}|n|s|e|w|ne|nw|se|sw|center|smart|top)){0,2}"
    r"(-[qc][1-9][0-9]?|-q[0-9]{3})?"  # qualities in range, and some not
    r"(-(fit|pad|n|smart))?"
    r"\.(jpg|jpeg|png|webp|gif|avif|[a-z]{2,5})",
    fullmatch=True,
)
DEFAULTS = {"jpg": 85, "webp": 80}


def test_near_grammar_paths_parse_or_are_refused_cleanly() -> None:
    reached: list[str] = []

    @given(segment, segment, segment, near_output)
    def check(model: str, kind: str, image_id: str, name: str) -> None:
        try:
            request = parse_path(f"/{model}/{kind}/{image_id}/{name}")
            check_allowed(request.output, ["jpg", "png", "webp"], 1000)
        except (BadRequest, NotAcceptable):
            return
        reached.append(name)
        spec = request.output
        assert spec.format in ("jpg", "png", "webp")
        assert spec.quality is None or 1 <= spec.quality <= 100
        assert all(side is None or 1 <= side <= 1000 for side in (spec.width, spec.height))

    check()
    assert len(reached) >= 10  # the assertions above did run


def test_outputs_parse_or_are_bad_requests() -> None:
    reached: list[str] = []

    @given(st.one_of(near_output, st.text(max_size=40)))
    def check(name: str) -> None:
        try:
            spec = parse_output(name)
        except BadRequest:
            return
        reached.append(name)
        # What parses is in the grammar: its canonical name parses to the same output
        # (without a quality that means nothing, or that is the default: 100 here;
        # without a pad colour that is the format's default), and is a fixed point.
        dropped = spec.format in LOSSLESS_FORMATS or spec.quality == 100
        canonical = canonical_name(spec, {})
        default_colour = spec.background == pad_colour(spec.format, "")
        assert parse_output(canonical) == dataclasses.replace(
            spec,
            quality=None if dropped else spec.quality,
            background="" if default_colour else spec.background,
        )
        assert canonical_name(parse_output(canonical), {}) == canonical
        assert spec.fit.is_box or (spec.gravity is Gravity.CENTRE and not spec.background)

    check()
    assert len(reached) >= 10


sizes = st.integers(1, 1000)
jpeg_names = st.sampled_from(["jpg", "jpeg"])
default_quality = st.sampled_from(["", "-q85", "-c85"])  # 85: the jpg default of DEFAULTS


@given(sizes, jpeg_names, jpeg_names, default_quality, default_quality, st.integers(1, 100))
def test_equivalent_names_have_one_canonical_name(
    side: int, ext_a: str, ext_b: str, quality_a: str, quality_b: str, any_quality: int
) -> None:
    """`NxN` and `xN`, `jpeg` and `jpg`, the default quality written or not: one name;
    a lossless format ignores quality."""
    square = parse_path(f"/m/t/1/{side}x{side}{quality_a}.{ext_a}", None, DEFAULTS)
    same = parse_path(f"/m/t/1/x{side}{quality_b}.{ext_b}", None, DEFAULTS)
    assert square.cache_key == same.cache_key == f"m/t/1/x{side}.jpg"
    png = parse_path(f"/m/t/1/w{side}-q{any_quality}.png", None, DEFAULTS)
    assert png.output_name == f"w{side}.png"
    again = parse_path(f"/m/t/1/{square.output_name}", None, DEFAULTS)
    assert again.cache_key == square.cache_key  # canonical names are fixed points


@given(sizes, sizes, st.integers(1, 100), st.integers(1, 100))
def test_different_outputs_have_different_names(
    side: int, other_side: int, quality: int, other_quality: int
) -> None:
    def name(output: str) -> str:
        return parse_path(f"/m/t/1/{output}", None, DEFAULTS).output_name

    assert name(f"x{side}.jpg") != name(f"x{side}.webp")
    assert name(f"w{side}.jpg") != name(f"x{side}.jpg")
    if side != other_side:
        assert name(f"x{side}.jpg") != name(f"x{other_side}.jpg")
        assert name(f"{side}x{other_side}.jpg") != name(f"{other_side}x{side}.jpg")
    if quality != other_quality:
        assert name(f"x{side}-q{quality}.jpg") != name(f"x{side}-q{other_quality}.jpg")


@given(sizes, sizes, st.sampled_from(["ffffff", "FFFFFF", "fFfFfF"]))
def test_placements_have_one_canonical_name(width: int, height: int, white: str) -> None:
    def name(output: str) -> str:
        return parse_path(f"/m/t/1/{output}", None, DEFAULTS).output_name

    box = f"{width}x{height}" if width != height else f"x{width}"
    assert name(f"{width}x{height}-center.jpg") == f"{box}.jpg"  # the bare crop
    assert name(f"{width}x{height}-pad-{white}.jpg") == f"{box}-pad.jpg"  # jpg pads white
    assert name(f"{width}x{height}-pad-{white}.png") == f"{box}-pad-ffffff.png"  # not clear
    assert name(f"{width}x{height}-pad-{white}-c85.jpeg") == f"{box}-pad.jpg"
    assert name(f"{width}x{height}-smart-q85.jpg") == f"{box}-smart.jpg"


@given(sizes, st.sampled_from(list(Gravity)), st.sampled_from(list(Gravity)))
def test_different_placements_have_different_names(side: int, one: Gravity, other: Gravity) -> None:
    def name(output: str) -> str:
        return parse_path(f"/m/t/1/{output}", None, DEFAULTS).output_name

    if one != other:
        assert name(f"x{side}-{one.value}.jpg") != name(f"x{side}-{other.value}.jpg")
    shapes = {name(f"x{side}-{one.value}.jpg"), name(f"x{side}-fit.jpg"), name(f"x{side}-pad.jpg")}
    assert len(shapes | {name(f"h{side}.jpg"), name(f"w{side}.jpg")}) == 5
