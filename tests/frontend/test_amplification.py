"""What one anonymous client can make us do: which outputs, how many, how costly.

Real programs, a real RabbitMQ, a real origin. Each test fails without its
defence: the refused requests would be resized (the origin counts its
downloads), the budget would let every miss through, the costly outputs would
be encoded for seconds and answered 200 or 504.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import urllib3

from common.signing import signed_url
from common.urls import MAX_SOURCE_CHARS
from tests.support import REPO
from tests.support.images import animated_gif, decode, photo, smooth
from tests.support.in_process import InProcessFrontend
from tests.support.origin import Origin
from tests.support.settings import object_key_of
from tests.support.stack import Stack
from tests.support.waiting import wait_until

_ids = itertools.count(1)
SIGN_KEY = "sign-key-of-the-amplification-tests"


def new_image(origin: Origin, model: str = "amp/img", body: bytes | None = None) -> str:
    """A new original at the origin; its URL path prefix."""
    path = f"{model}/{next(_ids)}"
    origin.add(f"{path}/original.jpg", photo() if body is None else body)
    return f"/{path}"


def downloads(origin: Origin, prefix: str) -> int:
    return origin.hits[f"{prefix.lstrip('/')}/original.jpg"]


# --- allowed_outputs --------------------------------------------------------------


def test_unsigned_requests_get_only_the_allowed_outputs(
    in_process: Callable[..., InProcessFrontend], origin: Origin
) -> None:
    stack = in_process(
        allowed_outputs=["x50.*", "w500.jpg", "300x200-pad*.jpg"],
        allowed_outputs_by_type={"amp/avatar": ["x100.webp"]},
    )
    image = new_image(origin)
    refusals = ("w501.jpg", "w500.webp", "x50-q60.jpg", "x100.webp", "full_size.jpg", "x50-n.jpg")
    for refused in (*refusals, "300x200-pad-ff0000.webp", "300x200-fit.jpg", "x50-smart.jpg"):
        answer = stack.get(f"{image}/{refused}")
        assert answer.status == 406, refused
        assert b"not an output this server makes" in answer.data
    assert downloads(origin, image) == 0  # refused before anything was queued
    # Patterns match canonical names: x50-center is x50; -pad-FFFFFF on a JPEG is -pad.
    allowed_names = (
        "x50.jpg",
        "x50.webp",
        "50x50.png",
        "w500.jpg",
        "w500-q78.jpg",
        "x50-center.jpg",
    )
    for allowed in (*allowed_names, "300x200-pad-FFFFFF.jpg", "300x200-pad-00ff00.jpg"):
        assert stack.get(f"{image}/{allowed}").status == 200, allowed
    avatar = new_image(origin, "amp/avatar")
    assert stack.get(f"{avatar}/x100.webp").status == 200
    assert stack.get(f"{avatar}/x50.jpg").status == 406  # the type's own list applies


def test_a_cached_output_outside_the_list_is_not_served_either(
    in_process: Callable[..., InProcessFrontend], origin: Origin
) -> None:
    """The cache-hit fast path applies the list too (a file made before the list
    was set, or by a signed request)."""
    stack = in_process(allowed_outputs=["x50.*"])
    image = new_image(origin)
    cached = stack.cached(f"{image.lstrip('/')}/w300.jpg")
    cached.parent.mkdir(parents=True)
    cached.write_bytes(photo())
    assert stack.get(f"{image}/w300.jpg").status == 406
    assert stack.resizer.jobs == {}  # refused before the cache or any job


def test_signed_requests_may_ask_any_output_and_unsigned_only_the_allowed(
    in_process: Callable[..., InProcessFrontend], origin: Origin
) -> None:
    stack = in_process(signing_keys=[SIGN_KEY], allowed_outputs=["x50.*"])
    image = new_image(origin)
    assert stack.get(f"{image}/x50.jpg").status == 200
    assert stack.get(f"{image}/x50.jpg").status == 200  # a hit: the fast path serves it too
    unsigned = stack.get(f"{image}/w300.jpg")
    assert unsigned.status == 403 and b"needs a signed URL" in unsigned.data
    signed = stack.get(signed_url(SIGN_KEY, f"{image}/w300.jpg"))
    assert signed.status == 200 and decode(signed.data).width == 300
    assert stack.get(f"{image}/w300.jpg").status == 403  # cached now, unsigned all the same


def test_a_public_environment_refuses_to_start_open_to_any_output(tmp_path: Path) -> None:
    shipped = json.loads((REPO / "config" / "production.json").read_text())
    open_config = {key: value for key, value in shipped.items() if key != "allowed_outputs"}
    (tmp_path / "production.json").write_text(json.dumps(open_config))
    environ = {k: v for k, v in os.environ.items() if not k.startswith("IMAGE_SERVER_")}
    started = subprocess.run(
        [sys.executable, "-m", "frontend", "-e", "production", "--config-dir", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={**environ, "IMAGE_SERVER_S3_ACCESS_KEY": "k", "IMAGE_SERVER_S3_SECRET_KEY": "s"},
    )
    assert started.returncode != 0
    assert "'signing_keys'" in started.stderr and "'allowed_outputs'" in started.stderr
    assert "Traceback" not in started.stderr


# --- the budget of resizes per client ---------------------------------------------


def fresh_connection_get(
    stack: Stack | InProcessFrontend, path: str, client: str
) -> urllib3.BaseHTTPResponse:
    """One request on a connection of its own: the kernel picks its frontend."""
    headers = {"X-Forwarded-For": client, "Connection": "close"}
    return urllib3.request("GET", stack.base_url + path, headers=headers, retries=False)


def test_a_client_gets_its_budget_of_resizes_on_the_whole_host(
    make_stack: Callable[..., Stack], origin: Origin
) -> None:
    stack = make_stack(
        frontends=2,
        client_miss_rate_per_s=0.01,
        client_miss_burst=3,
        trusted_proxies=["127.0.0.0/8"],
    ).start(processors=2)
    image = new_image(origin)
    statuses = [
        fresh_connection_get(stack, f"{image}/w{100 + index}.jpg", "203.0.113.7")
        for index in range(30)
    ]
    assert [answer.status for answer in statuses[:3]] == [200, 200, 200]
    refused = statuses[3:]
    assert {answer.status for answer in refused} == {429}
    # The next resize is 100 s away at 0.01/s.
    assert all(90 <= int(answer.headers["Retry-After"]) <= 100 for answer in refused)
    # Both frontends answered this client: the budget is the host's, not a process's.
    logged = '"client": "203.0.113.7"'
    for index in (0, 1):
        wait_until(lambda: logged in stack.access_log(index), what=f"log {index}")  # noqa: B023

    # Hits, conditional requests and answers from object storage are free.
    made = statuses[0]
    again = fresh_connection_get(stack, f"{image}/w100.jpg", "203.0.113.7")
    assert again.status == 200 and again.data == made.data
    etag = made.headers["ETag"]
    headers = {"X-Forwarded-For": "203.0.113.7", "If-None-Match": etag}
    assert stack.get(f"{image}/w100.jpg", headers=headers).status == 304
    stored = stack.stored_path(object_key_of(stack.settings, f"{image.lstrip('/')}/w200.jpg"))
    stored.parent.mkdir(parents=True, exist_ok=True)
    stored.write_bytes(made.data)
    assert fresh_connection_get(stack, f"{image}/w200.jpg", "203.0.113.7").status == 200
    assert fresh_connection_get(stack, f"{image}/w201.jpg", "203.0.113.7").status == 429
    # Another client has a budget of its own.
    assert fresh_connection_get(stack, f"{image}/w201.jpg", "198.51.100.9").status == 200


def test_forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy(
    in_process: Callable[..., InProcessFrontend], origin: Origin
) -> None:
    stack = in_process(client_miss_rate_per_s=0.01, client_miss_burst=2)
    image = new_image(origin)
    statuses = [
        fresh_connection_get(stack, f"{image}/w{100 + index}.jpg", f"192.0.2.{index}").status
        for index in range(4)
    ]
    assert statuses == [200, 200, 429, 429]  # one client, 127.0.0.1, whatever it claims


# --- costly outputs, bounded before the work ----------------------------------------


def test_an_animation_cannot_be_blown_up_to_many_large_frames(stack: Stack, origin: Origin) -> None:
    """100 frames of 16x16 (25,600 source pixels) asked as x1000.webp would be
    100 frames of 1000x1000: refused from the header (max_output_pixels.webp),
    and remembered: the repeat costs no download."""
    image = new_image(origin, body=animated_gif(100, 16))
    answer = stack.get(f"{image}/x1000.webp")
    assert answer.status == 413
    assert b"1000x1000 x 100 frames" in answer.data and b"max_output_pixels.webp" in answer.data
    fetched = downloads(origin, image)
    close = {"Connection": "close"}  # new connections: both frontends answer
    for _ in range(8):  # each frontend may learn it once
        assert stack.get(f"{image}/x1000.webp", headers=close).status == 413
    wait_until(  # request lines are written every half second
        lambda: stack.frontends_that_answered(f"{image.lstrip('/')}/x1000.webp") == {0, 1},
        what="both frontends answered",
    )
    assert downloads(origin, image) <= fetched + 1
    small = stack.get(f"{image}/x100.webp")  # 100 frames of 100x100: fine
    assert small.status == 200 and decode(small.data).get("n-pages") == 100


def test_full_size_outputs_are_bounded_per_format(
    in_process: Callable[..., InProcessFrontend], origin: Origin
) -> None:
    """A 5000x4000 original: its full_size JPEG is made, its full_size PNG (20 MP,
    seconds of encoding and too many bytes) and AVIF are refused before decoding."""
    stack = in_process(whitelisted_extensions=["jpg", "png", "webp", "avif"])
    image = new_image(origin, body=smooth(5000, 4000))
    for fmt in ("png", "avif", "webp"):
        answer = stack.get(f"{image}/full_size.{fmt}")
        assert answer.status == 413, fmt
        assert f"max_output_pixels.{fmt}".encode() in answer.data
    made = stack.get(f"{image}/full_size.jpg")
    assert made.status == 200
    assert (decode(made.data).width, decode(made.data).height) == (5000, 4000)
    assert stack.get(f"{image}/w1000.avif").status == 200  # 1000x800: within the bound


def test_a_source_url_is_capped_in_length(stack: Stack, origin: Origin) -> None:
    source = origin.url("x" * MAX_SOURCE_CHARS)
    answer = stack.get("/amp/img/1/w100.jpg", fields={"source": source})
    assert answer.status == 414 and b"source URL is longer" in answer.data


def test_every_spelling_of_one_source_makes_one_original(stack: Stack, origin: Origin) -> None:
    """Thirteen spellings of one `source=` URL were thirteen originals, each with
    its outputs: now one original, one output, one download."""
    image = new_image(origin, "amp/spelled")
    url = origin.url(f"{image.lstrip('/')}/original.jpg")  # http://127.0.0.1:<port>/amp/...
    head, path = url.split("/amp/")
    spellings = [
        url,
        f"{url}?",
        f"{url}#x",
        f"{url}?#x",
        f"{head}//amp/{path}",
        f"{head}/./amp/{path}",
        f"{head}/amp/x/../{path}",
        url.replace("http://", "HTTP://"),
        url.replace("127.0.0.1", "127.0.0.1."),
        f"{head}/%61mp/{path}",
        url.replace("original.jpg", "original%2Ejpg"),
        url.replace("original.jpg", "%6Friginal.jpg"),
        f" {url}",
    ]
    for source in spellings:
        answer = stack.get(f"{image}/w100.jpg", fields={"source": source})
        assert answer.status == 200, (source, answer.data)
    assert downloads(origin, image) == 1
    assert stack.resizes(f"{image.lstrip('/')}/") == 1
    refused = stack.get(f"{image}/w100.jpg", fields={"source": f"{url}?utm=1"})
    assert refused.status == 403 and b"allowed_source_query" in refused.data


def test_production_can_require_a_signed_source(
    in_process: Callable[..., InProcessFrontend], origin: Origin
) -> None:
    key = "k" * 32
    stack = in_process(
        signing_keys=[key], allowed_outputs=["w100.*"], source_requires_signature=True
    )
    image = new_image(origin)
    source = origin.url(f"{image.lstrip('/')}/original.jpg")
    assert stack.get(f"{image}/w100.jpg").status == 200  # an allowed output, unsigned
    unsigned = stack.get(f"{image}/w100.jpg", fields={"source": source})
    assert unsigned.status == 403 and b"source= URL needs a signed URL" in unsigned.data
    signed = stack.get(signed_url(key, f"{image}/w100.jpg", source))
    assert signed.status == 200
