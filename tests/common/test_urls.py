from __future__ import annotations

import pytest

from common.errors import BadRequest, NotAcceptable
from common.urls import (
    Fit,
    Gravity,
    OutputSpec,
    check_allowed,
    negotiate,
    parse_output,
    parse_path,
)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("w500.jpg", OutputSpec(Fit.WIDTH, 500, None, None, "jpg")),
        ("x600.jpg", OutputSpec(Fit.COVER, 600, 600, None, "jpg")),
        ("300x400.jpg", OutputSpec(Fit.COVER, 300, 400, None, "jpg")),
        ("full_size.webp", OutputSpec(Fit.NONE, None, None, None, "webp")),
        ("x50-q60.jpg", OutputSpec(Fit.COVER, 50, 50, 60, "jpg")),
        ("x50-c60.jpg", OutputSpec(Fit.COVER, 50, 50, 60, "jpg")),
        ("w500.jpeg", OutputSpec(Fit.WIDTH, 500, None, None, "jpg")),
        ("w1-q100.png", OutputSpec(Fit.WIDTH, 1, None, 100, "png")),
        ("full_size-q10.jpg", OutputSpec(Fit.NONE, None, None, 10, "jpg")),
        ("h200.jpg", OutputSpec(Fit.HEIGHT, None, 200, None, "jpg")),
        ("300x200-fit.jpg", OutputSpec(Fit.INSIDE, 300, 200, None, "jpg")),
        ("x300-fit-q60.webp", OutputSpec(Fit.INSIDE, 300, 300, 60, "webp")),
        ("300x200-pad.png", OutputSpec(Fit.PAD, 300, 200, None, "png")),
        ("300x200-pad-F0e0D0.jpg", OutputSpec(Fit.PAD, 300, 200, None, "jpg", background="f0e0d0")),
        ("x300-n.jpg", OutputSpec(Fit.COVER, 300, 300, None, "jpg", gravity=Gravity.NORTH)),
        ("30x20-sw-c9.jpg", OutputSpec(Fit.COVER, 30, 20, 9, "jpg", gravity=Gravity.SOUTH_WEST)),
        ("x300-smart.avif", OutputSpec(Fit.COVER, 300, 300, None, "avif", gravity=Gravity.SMART)),
        ("x300-center.jpg", OutputSpec(Fit.COVER, 300, 300, None, "jpg")),
    ],
)
def test_outputs_in_the_grammar(name: str, expected: OutputSpec) -> None:
    assert parse_output(name) == expected


@pytest.mark.parametrize(
    "name",
    [
        "random.jpg",
        "w0.jpg",
        "x0.jpg",
        "0x10.jpg",
        "w0500.jpg",
        "w500",
        "w500.",
        "w500.JPG",
        "w-5.jpg",
        "x50-q0.jpg",
        "x50-q101.jpg",
        "x50-q.jpg",
        "w500-q60-q70.jpg",
        "full_size",
        "w500.jpg.exe",
        "ww500.jpg",
        "w1234567.jpg",
        "",
    ],
)
def test_outputs_outside_the_grammar_are_bad_requests(name: str) -> None:
    with pytest.raises(BadRequest):
        parse_output(name)


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("w500-pad.jpg", "-pad needs a box"),
        ("h300-smart.jpg", "-smart needs a box"),
        ("full_size-n.jpg", "-n needs a box"),
        ("x300-fit-smart.jpg", "one of -fit, -pad, a gravity or -smart at most"),
        ("x300-n-e.jpg", "one of -fit, -pad, a gravity or -smart at most"),
        ("x300-q80-n.jpg", "the quality suffix comes last"),
        ("x300-pad-fff.jpg", "not in the grammar"),
        ("x300-top.jpg", "not in the grammar"),
        ("x300-N.jpg", "not in the grammar"),
    ],
)
def test_a_refused_output_says_what_is_wrong(name: str, problem: str) -> None:
    with pytest.raises(BadRequest) as refused:
        parse_output(name)
    assert problem in refused.value.message
    assert (
        "<shape>[-fit|-pad[-<rrggbb>]|-<gravity>|-smart][-q<Q>].<ext>" in refused.value.message
        or ("needs a box" in problem)
    )


@pytest.mark.parametrize(
    "path",
    [
        "/user/avatar/../w500.jpg",
        "/user/avatar/3589782/../x.jpg",
        "/user/avatar/w500.jpg",
        "/user/avatar/1/2/w500.jpg",
        "user/avatar/1/w500.jpg",
        "/user/ava tar/1/w500.jpg",
        "/user/avatar/%2e%2e/w500.jpg",
        "/user//1/w500.jpg",
    ],
)
def test_paths_outside_the_grammar_are_bad_requests(path: str) -> None:
    with pytest.raises(BadRequest):
        parse_path(path)


def test_path_parts_and_cache_key() -> None:
    request = parse_path("/user/avatar/3589782/w500.jpg")
    assert (request.model, request.image_type, request.id) == ("user", "avatar", "3589782")
    assert request.cache_key == "user/avatar/3589782/w500.jpg"


def test_an_explicit_source_gets_its_own_cache_key() -> None:
    plain = parse_path("/a/b/1/w10.jpg")
    one = parse_path("/a/b/1/w10.jpg", source="http://example.com/one.jpg")
    two = parse_path("/a/b/1/w10.jpg", source="http://example.com/two.jpg")
    assert len({plain.cache_key, one.cache_key, two.cache_key}) == 3
    assert one.cache_key.startswith("a/b/1/src-") and one.cache_key.endswith("/w10.jpg")


def test_extension_not_whitelisted_is_not_acceptable() -> None:
    with pytest.raises(NotAcceptable):
        check_allowed(parse_output("w500.pdf"), ["jpg", "png", "webp"], 1000)
    with pytest.raises(NotAcceptable):
        check_allowed(parse_output("w500.gif"), ["jpg", "png", "webp"], 1000)
    check_allowed(parse_output("w500.jpeg"), ["jpg"], 1000)


@pytest.mark.parametrize("name", ["w1001.jpg", "x1001.jpg", "10x1001.jpg", "1001x10.jpg"])
def test_sizes_above_maximum_width_are_not_acceptable(name: str) -> None:
    with pytest.raises(NotAcceptable):
        check_allowed(parse_output(name), ["jpg"], 1000)


def test_sizes_up_to_maximum_width_are_served() -> None:
    check_allowed(parse_output("w1000.jpg"), ["jpg"], 1000)
    check_allowed(parse_output("1000x1000.jpg"), ["jpg"], 1000)


def test_a_pad_served_in_another_format_keeps_the_colour_its_format_had() -> None:
    defaults = {"jpg": 80, "webp": 80}
    asked = parse_path("/m/t/1/300x200-pad.jpg", None, defaults)
    served = negotiate(asked, "image/webp,*/*", ["webp"], defaults)
    # WebP has alpha: its bare -pad would be transparent; the JPEG asked was white.
    assert served.output_name == "300x200-pad-ffffff.webp"
    assert served.varies
    coloured = parse_path("/m/t/1/300x200-pad-102030.jpg", None, defaults)
    assert negotiate(coloured, "image/webp", ["webp"], defaults).output_name == (
        "300x200-pad-102030.webp"
    )


def test_negotiation_keeps_an_explicit_quality() -> None:
    defaults = {"jpg": 78, "webp": 80}
    asked = parse_path("/m/t/1/w300-q55.jpg", None, defaults)
    served = negotiate(asked, "image/webp,*/*", ["webp"], defaults)
    assert served.output_name == "w300-q55.webp" and served.output.quality == 55
    plain = negotiate(
        parse_path("/m/t/1/w300.jpg", None, defaults), "image/webp", ["webp"], defaults
    )
    assert plain.output_name == "w300.webp"  # the served format's default quality
