"""Hostile or broken sources and requests, end to end (real programs, real RabbitMQ)."""

from __future__ import annotations

import concurrent.futures
import hashlib
import itertools
import json
import socket
import string
import urllib.parse
from collections.abc import Callable
from pathlib import Path

import pytest
import pyvips
from hypothesis import given, settings
from hypothesis import strategies as st

from common.urls import MAX_PATH_CHARS
from tests.support.images import decode, photo
from tests.support.origin import Origin
from tests.support.settings import object_key_of, original_key_of
from tests.support.stack import Stack
from tests.support.waiting import wait_until

_ids = itertools.count(50_000)
# Every status of the README's error table, and success.
DOCUMENTED = {200, 304, 400, 403, 404, 406, 413, 414, 415, 502, 503, 504}


def new_id(origin: Origin, body: bytes | None = None, **kwargs: object) -> str:
    image_id = next(_ids)
    origin.add(f"hard/img/{image_id}/original.jpg", photo() if body is None else body, **kwargs)
    return f"/hard/img/{image_id}"


def files_under(directory: Path) -> list[Path]:
    return [path for path in directory.rglob("*") if path.is_file()] if directory.exists() else []


# --- a slow source ---------------------------------------------------------------


def test_trickling_sources_do_not_stall_other_misses(
    make_stack: Callable[..., Stack], origin: Origin
) -> None:
    # The job's and the frontend's own deadlines far past the download's: only
    # source_download_timeout_s can end these downloads at 6 s.
    timeouts = {"source_download_timeout_s": 6.0, "job_timeout_s": 30.0, "resize_deadline_s": 40.0}
    stack = make_stack(**timeouts).start(processors=2)
    slow = [new_id(origin, photo()[:30_000], trickle_interval_s=0.2) for _ in range(4)]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        trickling = [pool.submit(stack.get, f"{prefix}/w100.jpg") for prefix in slow]
        for prefix in slow:
            assert origin.started[f"{prefix.lstrip('/')}/original.jpg"].wait(10)
        # Four downloads hold job slots of both processors; misses of other
        # images are answered all the same, while those downloads go on.
        for _ in range(3):
            assert stack.get(f"{new_id(origin)}/w200.jpg").status == 200
        assert not any(future.done() for future in trickling)
        statuses = [future.result().status for future in trickling]
    assert statuses == [504] * 4
    # Cut off at source_download_timeout_s by the processor, not by the frontend's own
    # resize_deadline_s (which answers 504 too): each job's line says so.
    lines = [
        json.loads(line)
        for name in ("processor_0", "processor_1")
        for line in stack.log(name).splitlines()
        if '"event": "job"' in line
    ]
    timed_out = {line["cache_key"] for line in lines if line["outcome"] == "SourceTimeout"}
    assert timed_out == {f"{prefix.lstrip('/')}/w100.jpg" for prefix in slow}, lines
    # Ended by the download's deadline, not the job's (30 s): the elapsed time says so.
    took_s = [line["duration_ms"] / 1000 for line in lines if line["outcome"] == "SourceTimeout"]
    assert all(6.0 <= seconds < 20.0 for seconds in took_s), took_s


# --- a bad original is not kept -----------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        (
            {
                "body": b"<html><body>Down for maintenance</body></html>",
                "content_type": "text/html",
            },
            b"not an image",
        ),
        (
            {"body": photo()[: len(photo()) // 2], "close_delimited": True},
            b"truncated or corrupt",
        ),
    ],
    ids=["html-page-with-200", "truncated-without-content-length"],
)
def test_a_bad_original_is_never_kept(
    make_stack: Callable[..., Stack], origin: Origin, bad: dict[str, object], says: bytes
) -> None:
    stack = make_stack(failure_memory_s=1.0).start(processors=1, uploader=True)
    prefix = new_id(origin, **bad)  # type: ignore[arg-type]
    first = stack.get(f"{prefix}/w100.jpg")
    assert first.status == 415
    assert says in first.data
    assert [p.name for p in files_under(stack.workdir / "originals")] == []
    assert files_under(stack.workdir / "storage") == []
    # The origin is fixed. For failure_memory_s the failure is answered from the
    # frontend's memory, without asking the origin; then the origin is asked again.
    origin.add(f"{prefix.lstrip('/')}/original.jpg", photo())
    remembered = stack.get(f"{prefix}/w100.jpg")
    assert remembered.status == 415 and remembered.data == first.data
    assert origin.hits[f"{prefix.lstrip('/')}/original.jpg"] == 1
    wait_until(lambda: stack.get(f"{prefix}/w100.jpg").status == 200, what="asked again")
    second = stack.get(f"{prefix}/w100.jpg")
    assert decode(second.data).width == 100
    assert origin.hits[f"{prefix.lstrip('/')}/original.jpg"] == 2


def test_a_truncated_original_says_so(stack: Stack, origin: Origin) -> None:
    prefix = new_id(origin, photo()[:5000])
    response = stack.get(f"{prefix}/w100.jpg")
    assert response.status == 415
    assert response.data == b"the original is truncated or corrupt\n"


# --- one output, one name -------------------------------------------------------------


def test_names_of_one_output_share_one_file_and_one_resize(stack: Stack, origin: Origin) -> None:
    prefix = new_id(origin)
    jpegs = [stack.get(f"{prefix}/{name}") for name in ("w120.jpg", "w120.jpeg", "w120-q78.jpg")]
    jpegs.append(stack.get(f"{prefix}/w120-c78.jpg"))
    assert {r.status for r in jpegs} == {200}
    assert len({r.data for r in jpegs}) == 1
    pngs = [stack.get(f"{prefix}/{name}") for name in ("x64.png", "64x64-q1.png", "x64-q100.png")]
    assert {r.status for r in pngs} == {200} and len({r.data for r in pngs}) == 1
    key = prefix.lstrip("/")
    assert stack.resizes(f"{key}/w120.jpg") == 1
    assert stack.resizes(f"{key}/x64.png") == 1
    cached = sorted(p.name.split(".", 1)[1] for p in stack.cached_outputs(key))
    assert cached == ["w120.jpg", "x64.png"]
    # A quality that is not the default is an output of its own.
    assert stack.get(f"{prefix}/w120-q40.jpg").data != jpegs[0].data
    assert stack.cached(f"{key}/w120-q40.jpg").exists()


# --- files that only grew -------------------------------------------------------------


def test_lock_files_do_not_pile_up(stack: Stack, origin: Origin) -> None:
    for index in range(20):
        assert stack.get(f"/hard/missing/{index}/w100.jpg").status == 404
    for _ in range(3):
        prefix = new_id(origin)
        for output in ("w100.jpg", "w200.jpg", "x50.png"):
            assert stack.get(f"{prefix}/{output}").status == 200
    lock_dirs = [stack.workdir / "cache" / ".locks", stack.workdir / "originals" / ".locks"]
    lock_dirs.append(stack.workdir / "originals" / "masters" / ".locks")
    assert all(d.is_dir() for d in lock_dirs), lock_dirs  # locks were taken there
    assert [files_under(d) for d in lock_dirs] == [[], [], []]


# --- what every answer carries, whatever the request ---------------------------------


def raw_request(stack: Stack, request_line: str) -> tuple[int, dict[str, str], bytes]:
    with socket.create_connection(("127.0.0.1", stack.config["server_port"]), timeout=10) as sock:
        sock.sendall(f"{request_line}\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data, f"no answer at all to {request_line[:80]!r}"
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


@pytest.mark.parametrize("target", ["*", "sample/image/1/w100.jpg", "http://x/a/b/1/w1.jpg"])
def test_targets_that_are_not_paths_get_the_plain_text_error(stack: Stack, target: str) -> None:
    status, headers, body = raw_request(stack, f"GET {target} HTTP/1.1")
    assert status == 400
    assert headers["content-type"].startswith("text/plain")
    assert b"<html" not in body


def test_every_answer_says_nosniff(stack: Stack, origin: Origin) -> None:
    prefix = new_id(origin)
    answers = [
        stack.get(f"{prefix}/w100.jpg"),  # a miss
        stack.get(f"{prefix}/w100.jpg"),  # a hit, on the fast path
        stack.get(f"{prefix}/w100.jpg", fields={"x": "1"}),  # a hit, through the application
        stack.get("/hard/img/<img src=x onerror=alert(1)>/w100.jpg"),  # 400 echoing the path
        stack.get("/hard/missing/x/w100.jpg"),  # 404
    ]
    for page in ("/", "/status.json", "/health", "/metrics"):  # the status server's
        answers.append(stack.http.request("GET", stack.status_url + page))
    assert [a.headers.get("X-Content-Type-Options") for a in answers] == ["nosniff"] * 9


def test_long_segments_and_paths_are_refused_not_dropped(stack: Stack, origin: Origin) -> None:
    # The cache directory of the model and type exists (as on any live host): the file
    # system is then asked about the long name itself, not only about its parent.
    assert stack.get(f"{new_id(origin)}/w100.jpg").status == 200
    status, _, body = raw_request(stack, f"GET /hard/img/{'a' * 500}/w100.jpg HTTP/1.1")
    assert status == 400 and b"longer than" in body
    status, _, _ = raw_request(stack, f"GET /a/b/c/w100.jpg?{'x' * 300}=1 HTTP/1.1")
    assert status in DOCUMENTED
    status, _, body = raw_request(stack, f"GET /{'a/' * MAX_PATH_CHARS}w1.jpg HTTP/1.1")
    assert status == 414, body


# Any bytes (percent-encoded), and segments of the grammar's own characters of any
# length: past 255 they are longer than a file name may be.
_SEGMENT_BYTES = st.binary(max_size=600) | st.text(
    alphabet=string.ascii_letters + string.digits + "_-", min_size=100, max_size=600
).map(str.encode)


@pytest.fixture(scope="module")
def hard_img_cached(stack: Stack, origin: Origin) -> None:
    """An output under /hard/img, so that its cache directory exists."""
    assert stack.get(f"{new_id(origin)}/w100.jpg").status == 200


@settings(max_examples=60, deadline=None, derandomize=True)  # reproducible on a shared stack
@given(st.lists(_SEGMENT_BYTES, min_size=1, max_size=5), st.booleans())
def test_every_path_gets_a_documented_answer(
    stack: Stack, hard_img_cached: None, segments: list[bytes], as_output: bool
) -> None:
    parts = [urllib.parse.quote_from_bytes(s, safe=string.ascii_letters) for s in segments]
    if as_output:  # reach the output grammar and the cache lookup
        parts = ["hard", "img", *parts[:1], "w100.jpg"]
    status, headers, body = raw_request(stack, f"GET /{'/'.join(parts)} HTTP/1.1")
    assert status in DOCUMENTED, (parts, status, body[:200])
    assert b"Traceback" not in body


# --- payloads near the broker's limit ---------------------------------------------------


def test_an_output_above_max_output_bytes_is_413(
    make_stack: Callable[..., Stack], origin: Origin
) -> None:
    stack = make_stack(max_output_bytes=200_000).start(processors=1)
    noise = pyvips.Image.gaussnoise(600, 600, sigma=80).cast("uchar").bandjoin([0, 0])
    prefix = new_id(origin, bytes(noise.copy(interpretation="srgb").jpegsave_buffer(Q=98)))
    response = stack.get(f"{prefix}/full_size.png")
    assert response.status == 413
    assert b"max_output_bytes" in response.data
    assert stack.get(f"{prefix}/w100.png").status == 200  # small outputs of it still work


# --- keys of outputs and of originals ------------------------------------------------------


def test_an_output_can_never_take_the_key_of_an_original(
    make_stack: Callable[..., Stack], origin: Origin
) -> None:
    """The attack: model `originals`, image type = the hash of a victim's source URL."""
    stack = make_stack().start(processors=1, uploader=True)
    victim = new_id(origin)
    victim_url = origin.url(f"{victim.lstrip('/')}/original.jpg")
    digest = hashlib.sha256(victim_url.encode()).hexdigest()
    origin.add(f"originals/{digest}/1/original.jpg", photo())
    assert stack.get(f"/originals/{digest}/1/w100.jpg").status == 200
    attackers = stack.stored_path(object_key_of(stack.settings, f"originals/{digest}/1/w100.jpg"))
    wait_until(attackers.is_file, what="the attacker's output")
    assert stack.get(f"{victim}/w100.jpg").status == 200
    victims = stack.stored_path(
        original_key_of(stack.settings, f"{victim.lstrip('/')}/w100.jpg", victim_url)
    )
    wait_until(victims.is_file, what="the victim's original")
    assert victims.read_bytes() == photo()


def test_a_source_host_past_its_downloads_at_once_answers_503(
    make_stack: Callable[..., Stack], origin: Origin
) -> None:
    stack = make_stack(max_downloads_per_source_host=1, source_download_timeout_s=4.0)
    stack.start(processors=1)
    slow = new_id(origin, photo()[:30_000], trickle_interval_s=0.2)
    other = new_id(origin)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        trickling = pool.submit(stack.get, f"{slow}/w100.jpg")
        assert origin.started[f"{slow.lstrip('/')}/original.jpg"].wait(10)
        busy = stack.get(f"{other}/w100.jpg")  # the same origin: its one slot is taken
        assert busy.status == 503 and b"already in progress" in busy.data
        assert "Retry-After" in busy.headers
        assert trickling.result().status == 504
    assert stack.get(f"{other}/w100.jpg").status == 200  # the slot is free again
