"""Content negotiation (auto_formats) and per-image quality: one frontend and the
processor's code in this process (tests/support/in_process.py); the choice is the frontend's."""

from __future__ import annotations

import itertools
from collections.abc import Callable

from tests.support.images import loader, photo, smooth
from tests.support.in_process import InProcessFrontend
from tests.support.origin import Origin

_ids = itertools.count(70_000)
ALL_FORMATS = ["jpg", "png", "webp", "avif", "gif"]


def new_id(origin: Origin) -> str:
    image_id = next(_ids)
    origin.add(f"fmt/img/{image_id}/original.jpg", photo())
    return f"/fmt/img/{image_id}"


def test_a_jpg_request_gets_the_best_format_its_accept_header_allows(
    in_process: Callable[..., InProcessFrontend], origin: Origin
) -> None:
    stack = in_process(auto_formats=["avif", "webp"], whitelisted_extensions=ALL_FORMATS)
    prefix = new_id(origin)
    browsers = {
        "image/avif,image/webp,image/apng,*/*;q=0.8": ("image/avif", "heifload_buffer"),
        "image/webp,*/*": ("image/webp", "webpload_buffer"),
        "image/avif;q=0, image/webp": ("image/webp", "webpload_buffer"),
        "*/*": ("image/jpeg", "jpegload_buffer"),
        "": ("image/jpeg", "jpegload_buffer"),
    }
    for _ in range(2):  # made, then a cache hit (the other path): the same answers
        for accept, (content_type, expected_loader) in browsers.items():
            response = stack.get(f"{prefix}/w200.jpg", headers={"Accept": accept})
            assert response.status == 200
            assert response.headers["Content-Type"] == content_type
            assert response.headers["Vary"] == "Accept"
            assert loader(response.data) == expected_loader
    key = prefix.lstrip("/")
    cached = sorted(p.name.split(".", 1)[1] for p in stack.cached_outputs(key))
    assert cached == ["w200.avif", "w200.jpg", "w200.webp"]  # keyed by the format served
    for name in cached:
        assert stack.resizer.jobs[f"{key}/{name}"] == 1
    # Another format asked by name is not negotiated and does not vary.
    png = stack.get(f"{prefix}/w200.png", headers={"Accept": "image/webp"})
    assert png.headers["Content-Type"] == "image/png" and "Vary" not in png.headers


def test_without_auto_formats_the_extension_decides(
    in_process: Callable[..., InProcessFrontend], origin: Origin
) -> None:
    stack = in_process()
    prefix = new_id(origin)
    response = stack.get(f"{prefix}/w200.jpg", headers={"Accept": "image/avif,image/webp"})
    assert response.headers["Content-Type"] == "image/jpeg"
    assert "Vary" not in response.headers


def test_quality_target_applies_only_without_an_explicit_quality(
    in_process: Callable[..., InProcessFrontend], origin: Origin
) -> None:
    stack = in_process(quality_target=0.95)
    image_id = next(_ids)
    origin.add(f"fmt/img/{image_id}/original.jpg", smooth(800, 500))
    targeted = stack.get(f"/fmt/img/{image_id}/w300.jpg")
    # Just below the default (78): a targeted output ignored would be larger than this one.
    explicit = stack.get(f"/fmt/img/{image_id}/w300-q77.jpg")
    assert targeted.status == explicit.status == 200
    assert len(targeted.data) < len(explicit.data)  # an easy picture needs little quality
