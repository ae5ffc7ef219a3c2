"""Safe to deploy: operator ports closed by default, a public health check, errors a
CDN keeps only when it should, keys from the environment (real programs)."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.images import photo
from tests.support.in_process import InProcessFrontend
from tests.support.origin import Origin
from tests.support.stack import Stack
from tests.support.waiting import wait_until


def listening_addresses(port: int) -> set[str]:
    """The local addresses something listens on at `port` (from /proc/net/tcp)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, port_hex = local.split(":")
        if state == "0A" and int(port_hex, 16) == port:  # LISTEN
            found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return found


def test_operator_ports_listen_on_loopback_while_the_public_port_is_open(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack(bind_address="0.0.0.0").start(processors=1, uploader=True, status=True)
    assert listening_addresses(stack.config["server_port"]) == {"0.0.0.0"}
    assert listening_addresses(stack.config["status_port"]) == {"127.0.0.1"}
    assert listening_addresses(stack.config["uploader_health_port"]) == {"127.0.0.1"}


def test_status_token_guards_everything_but_health(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(status_token="operator-token-of-the-tests").start(processors=1, status=True)
    for path in ("/", "/status.json", "/metrics"):
        refused = stack.http.request("GET", stack.status_url + path)
        assert refused.status == 401, path
        assert refused.headers["WWW-Authenticate"].startswith("Bearer")
        wrong = {"Authorization": "Bearer operator-token-of-the-testS"}
        assert stack.http.request("GET", stack.status_url + path, headers=wrong).status == 401
        right = {"Authorization": "Bearer operator-token-of-the-tests"}
        assert stack.http.request("GET", stack.status_url + path, headers=right).status == 200
    wait_until(
        lambda: stack.http.request("GET", f"{stack.status_url}/health").status == 200,
        what="/health without a token",
    )
    assert stack.http.request("HEAD", f"{stack.status_url}/health").status == 200


def test_the_public_port_answers_a_load_balancers_health_check(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack().start(processors=1)
    # No status server yet: nobody has checked this host, so it is not healthy.
    assert stack.get("/health").status == 503
    assert stack.get("/health", method="HEAD").status == 503
    stack.start_status()
    wait_until(lambda: stack.get("/health").status == 200, what="healthy on the public port")
    answer = stack.get("/health")
    assert answer.data == b"ok\n" and answer.headers["Cache-Control"] == "no-store"
    assert stack.get("/health", method="HEAD").status == 200
    # The status server says no processor consumes image.resize: so does the public port.
    stack.kill("processor_0")
    wait_until(lambda: stack.get("/health").status == 503, what="unhealthy on the public port")
    assert stack.get("/health").data == b"unhealthy\n"  # no detail for the network


def test_the_uploader_health_answers_head_and_drops_idle_connections(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack().start(processors=0, uploader=True)
    url = f"http://127.0.0.1:{stack.config['uploader_health_port']}/health"
    assert stack.http.request("HEAD", url).status in (200, 503)
    idle = [
        socket.create_connection(("127.0.0.1", stack.config["uploader_health_port"]))
        for _ in range(50)
    ]
    try:
        assert stack.http.request("GET", url, timeout=5).status in (200, 503)
        idle[0].settimeout(30)
        assert idle[0].recv(1) == b""  # closed by the server, not held forever
    finally:
        for connection in idle:
            connection.close()


# --- errors and Cache-Control -------------------------------------------------------


@pytest.fixture
def shop(in_process: Callable[..., InProcessFrontend], origin: Origin) -> InProcessFrontend:
    """The answers' headers are the frontend's: one in this process (tests/support/)."""
    origin.add("deploy/img/1/original.jpg", photo())
    return in_process(error_max_age_s=42, client_miss_rate_per_s=0.001, client_miss_burst=1)


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/deploy/img/1/random.jpg", 400),
        ("/deploy/img/404/w100.jpg", 404),
        ("/deploy/img/1/w100.pdf", 406),
        ("/deploy/img/1/w5000.jpg", 406),
    ],
)
def test_client_errors_may_be_kept_a_short_while(
    shop: InProcessFrontend, path: str, status: int
) -> None:
    answer = shop.get(path)
    assert answer.status == status
    assert answer.headers["Cache-Control"] == "public, max-age=42"


def test_a_busy_answer_is_never_kept(shop: InProcessFrontend) -> None:
    assert shop.get("/deploy/img/1/w100.jpg").status == 200  # the one miss of the budget
    hit = shop.get("/deploy/img/1/w100.jpg")
    assert hit.headers["Cache-Control"] == "public, max-age=31536000"  # the fast path's
    busy = shop.get("/deploy/img/1/w101.jpg")
    assert busy.status == 429 and busy.headers["Cache-Control"] == "no-store"


def test_a_down_origin_answer_is_not_kept(
    in_process: Callable[..., InProcessFrontend], origin: Origin
) -> None:
    stack = in_process(error_max_age_s=42)
    origin.add("deploy/img/2/original.jpg", b"", status=500)
    answer = stack.get("/deploy/img/2/w100.jpg")
    assert answer.status == 502
    assert answer.headers["Cache-Control"] == "no-store"


# --- one request, traced ------------------------------------------------------------


def test_a_request_id_joins_the_request_its_job_and_its_upload(
    make_stack: Callable[..., Stack], origin: Origin
) -> None:
    stack = make_stack().start(processors=1, uploader=True)
    origin.add("deploy/img/3/original.jpg", photo())
    headers = {"X-Request-ID": "trace-42.a", "User-Agent": "U" * 1000, "Referer": "https://shop/"}
    miss = stack.get("/deploy/img/3/w100.jpg", headers=headers)
    assert miss.status == 200 and miss.headers["X-Request-ID"] == "trace-42.a"
    hit = stack.get("/deploy/img/3/w100.jpg", headers=headers)  # the fast path
    assert hit.headers["X-Request-ID"] == "trace-42.a"
    made_up = stack.get("/deploy/img/3/w100.jpg", headers={"X-Request-ID": "<script>"})
    assert re.fullmatch(r"[0-9a-f]{16}", made_up.headers["X-Request-ID"])
    error = stack.get("/deploy/img/3/nonsense.jpg")
    assert error.status == 400 and re.fullmatch(r"[0-9a-f]{16}", error.headers["X-Request-ID"])

    def lines(text: str) -> list[dict[str, object]]:
        return [json.loads(line) for line in text.splitlines() if "trace-42.a" in line]

    wait_until(lambda: len(lines(stack.access_log(0))) == 2, what="the request lines")
    request = lines(stack.access_log(0))[0]
    assert request["client"] == "127.0.0.1" and request["referer"] == "https://shop/"
    assert request["user_agent"] == "U" * 256  # capped
    job = lines(stack.log("processor_0"))[0]
    assert job["event"] == "job" and job["cache_key"] == "deploy/img/3/w100.jpg"
    wait_until(lambda: lines(stack.log("uploader")) != [], what="the upload line")
    assert lines(stack.log("uploader"))[0]["event"] == "upload"


# --- an origin that is down is left alone -------------------------------------------


def test_a_missing_original_is_not_asked_again_for_a_while(
    in_process: Callable[..., InProcessFrontend], origin: Origin
) -> None:
    stack = in_process(source_not_found_ttl_s=2.0)
    assert stack.get("/deploy/missing/1/w100.jpg").status == 404
    assert stack.get("/deploy/missing/1/w200.jpg").status == 404  # another output, one URL
    assert origin.hits["deploy/missing/1/original.jpg"] == 1
    origin.add("deploy/missing/1/original.jpg", photo())  # uploaded since
    wait_until(lambda: stack.get("/deploy/missing/1/w300.jpg").status == 200, what="asked again")
    assert origin.hits["deploy/missing/1/original.jpg"] == 2


def test_a_failing_origin_host_is_paused_then_tried_again(
    make_stack: Callable[..., Stack], origin: Origin
) -> None:
    stack = make_stack(source_failures_to_open=3, source_pause_s=2.0)
    stack.start(processors=1, status=True)
    for index in range(5):
        origin.add(f"deploy/down/{index}/original.jpg", b"down", status=503)
    statuses = [stack.get(f"/deploy/down/{index}/w100.jpg").status for index in range(5)]
    assert statuses == [502, 502, 502, 503, 503]
    assert sum(origin.hits[f"deploy/down/{index}/original.jpg"] for index in range(5)) == 3
    paused = stack.get("/deploy/down/4/w100.jpg")
    assert b"failed 3 times in a row" in paused.data and "Retry-After" in paused.headers
    wait_until(lambda: "paused for 2 s" in stack.log("processor_0"), what="the log line")
    # The origin recovers: after the pause, one download tries it, and it is used again.
    for index in range(5):
        origin.add(f"deploy/down/{index}/original.jpg", photo())
    wait_until(lambda: stack.get("/deploy/down/4/w100.jpg").status == 200, what="tried again")
    assert [stack.get(f"/deploy/down/{i}/w100.jpg").status for i in range(4)] == [200] * 4
    paused_downloads = (
        "image_server_original_downloads_total",
        frozenset({("host", "127.0.0.1"), ("outcome", "SourceHostPaused")}),
    )
    assert stack.metrics().get(paused_downloads, 0) >= 2  # counted under the paused host


def test_a_source_url_may_name_only_allowed_ports(stack: Stack, origin: Origin) -> None:
    source = "http://127.0.0.1:6379/deploy/x.jpg"
    answer = stack.get("/deploy/img/9/w100.jpg", fields={"source": source})
    assert answer.status == 403 and b"source port 6379 is not allowed" in answer.data
