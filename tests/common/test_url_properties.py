"""Property-based: no input to the URL grammar is anything but parsed or a 400."""

from __future__ import annotations

import dataclasses

from hypothesis import given
from hypothesis import strategies as st

from common.errors import BadRequest, NotAcceptable, UriTooLong
from common.urls import (
    LOSSLESS_FORMATS,
    SEGMENT,
    canonical_name,
    check_allowed,
    effective_quality,
    parse_output,
    parse_path,
)

segment = st.from_regex(SEGMENT, fullmatch=True)
output = st.from_regex(
    r"(w[0-9]{1,7}|x[0-9]{1,7}|[0-9]{1,7}x[0-9]{1,7}|full_size)(-[qc][0-9]{1,4})?\.[a-z]{2,5}",
    fullmatch=True,
)


@given(st.text(max_size=120))
def test_any_text_parses_or_is_a_bad_request(path: str) -> None:
    try:
        request = parse_path(path)
    except BadRequest:
        return
    assert ".." not in request.cache_key
    assert not request.cache_key.startswith("/")
    assert len(request.cache_key.split("/")) == 4


@given(segment, segment, segment, output)
def test_near_grammar_paths_parse_or_are_refused_cleanly(
    model: str, kind: str, image_id: str, name: str
) -> None:
    try:
        request = parse_path(f"/{model}/{kind}/{image_id}/{name}")
        check_allowed(request.output, ["jpg", "png", "webp"], 1000)
    except (BadRequest, NotAcceptable):
        return
    spec = request.output
    assert spec.format in ("jpg", "png", "webp")
    assert spec.quality is None or 1 <= spec.quality <= 100
    assert all(side is None or 1 <= side <= 1000 for side in (spec.width, spec.height))


@given(st.text(max_size=40))
def test_outputs_parse_or_are_bad_requests(name: str) -> None:
    try:
        spec = parse_output(name)
    except BadRequest:
        return
    # What parses is in the grammar: its canonical name parses to the same output.
    assert parse_output(canonical_name(spec, {})) == dataclasses.replace(
        spec, quality=None if spec.format in LOSSLESS_FORMATS else spec.quality
    )


@given(segment, segment, segment, output)
def test_equivalent_names_have_one_canonical_name(
    model: str, kind: str, image_id: str, name: str
) -> None:
    defaults = {"jpg": 85, "webp": 80}
    try:
        request = parse_path(f"/{model}/{kind}/{image_id}/{name}", None, defaults)
    except (BadRequest, UriTooLong):
        return
    again = parse_path(f"/{model}/{kind}/{image_id}/{request.output_name}", None, defaults)
    assert again.cache_key == request.cache_key  # canonical names are fixed points
    assert effective_quality(again.output, defaults) == effective_quality(request.output, defaults)
    assert (again.output.fit, again.output.width, again.output.height) == (
        request.output.fit,
        request.output.width,
        request.output.height,
    )
