"""Faults, provoked for real: killed processors, a stopped broker, slow sources."""

from __future__ import annotations

import concurrent.futures
import json
import signal
import threading
import time
import urllib.parse
from collections.abc import Callable

import pika
import pytest
import urllib3

from common import amqp
from common.messages import ResizeJob
from common.urls import Fit
from tests.support.images import decode, photo
from tests.support.origin import Origin
from tests.support.rabbitmq import management, rabbitmqctl
from tests.support.stack import Stack
from tests.support.waiting import wait_until


def test_a_job_survives_its_processor_being_killed(
    make_stack: Callable[..., Stack], origin: Origin
) -> None:
    stack = make_stack()
    stack.start(processors=1)
    path = "kill/me/1/original.jpg"
    origin.add(path, photo(), delay_first_s=3.0)
    answers: list[urllib3.BaseHTTPResponse] = []
    client = threading.Thread(target=lambda: answers.append(stack.get("/kill/me/1/w200.jpg")))
    client.start()
    assert origin.started[path].wait(10), "the processor never asked for the original"
    stack.kill("processor_0")  # SIGKILL, mid-fetch: the job is unacked
    stack.start_processor(1)
    client.join(30)
    assert answers and answers[0].status == 200, answers and answers[0].data
    assert decode(answers[0].data).width == 200
    assert stack.resizes("kill/me/1/w200.jpg") == 1
    assert origin.hits[path] == 2


def test_no_result_within_the_deadline_is_504(
    make_stack: Callable[..., Stack], origin: Origin
) -> None:
    stack = make_stack(resize_deadline_s=1.0)
    stack.start(processors=1)
    origin.add("slow/source/1/original.jpg", photo(), delay_first_s=3.0)
    response = stack.get("/slow/source/1/w100.jpg")
    assert response.status == 504
    assert b"Traceback" not in response.data
    assert stack.alive() == {"processor_0": True, "frontend_0": True}


def test_undecodable_job_is_dead_lettered_and_the_worker_survives(
    make_stack: Callable[..., Stack], origin: Origin
) -> None:
    stack = make_stack()
    stack.start(processors=1)
    connection = pika.BlockingConnection(pika.URLParameters(stack.vhost.amqp_url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.basic_publish("", amqp.RESIZE_QUEUE, b"\x00\x00\x00\x05hello", amqp.persistent())
        wait_until(
            lambda: stack.vhost.message_count(amqp.RESIZE_DEAD_QUEUE) == 1,
            timeout_s=20,
            what="the bad job in the dead-letter queue",
        )
    finally:
        connection.close()
    origin.add("after/bad/1/original.jpg", photo())
    assert stack.get("/after/bad/1/w100.jpg").status == 200
    assert stack.alive()["processor_0"]


@pytest.mark.stops_broker
def test_broker_stopped_hits_still_served_misses_503_then_recovers(
    make_stack: Callable[..., Stack], origin: Origin
) -> None:
    stack = make_stack()
    stack.start(processors=1, status=True)
    health = f"{stack.status_url}/health"
    wait_until(lambda: stack.http.request("GET", health).status == 200, what="healthy")
    origin.add("broker/down/1/original.jpg", photo())
    warm = stack.get("/broker/down/1/w150.jpg")
    assert warm.status == 200
    rabbitmqctl("stop_app")
    try:
        wait_until(lambda: stack.http.request("GET", health).status == 503, what="broker lost")
        assert "RabbitMQ" in json.loads(stack.http.request("GET", health).data)["reason"]
        hit = stack.get("/broker/down/1/w150.jpg")
        assert hit.status == 200 and hit.data == warm.data
        miss = stack.get("/broker/down/1/w151.jpg")
        assert miss.status == 503
        assert miss.headers.get("Retry-After") == "1"
    finally:
        rabbitmqctl("start_app")
    wait_until(
        lambda: stack.get("/broker/down/1/w152.jpg").status == 200,
        timeout_s=60,
        what="the frontend and processor to reconnect",
    )
    wait_until(lambda: stack.http.request("GET", health).status == 200, what="healthy again")
    assert all(stack.alive().values())


@pytest.mark.stops_broker  # not stopped: its memory alarm blocks every publisher of the node
def test_a_broker_alarm_gives_503_at_once_and_clears_by_itself(
    make_stack: Callable[..., Stack], origin: Origin
) -> None:
    stack = make_stack()
    stack.start(processors=1, status=True)
    origin.add("broker/alarm/1/original.jpg", photo())
    warm = stack.get("/broker/alarm/1/w150.jpg")
    assert warm.status == 200
    health = f"{stack.status_url}/health"
    rabbitmqctl("set_vm_memory_high_watermark", "0.0001")  # every node's alarm goes off
    try:
        # The first publish makes RabbitMQ block the connection and say so: that
        # miss and every one after it get 503 (not a 504 after resize_deadline_s).
        misses = [stack.get(f"/broker/alarm/1/w{width}.jpg") for width in (151, 152, 153)]
        assert [m.status for m in misses] == [503, 503, 503]
        assert all(m.headers.get("Retry-After") == "1" for m in misses)
        assert b"alarm" in misses[-1].data

        # The status server's first samples may predate the frontend's connection
        # ("no frontend is connected"): wait for the reason, not any 503.
        def reason() -> str:
            answer = stack.http.request("GET", health)
            return str(json.loads(answer.data)["reason"]) if answer.status == 503 else ""

        wait_until(lambda: "RabbitMQ blocks publishing" in reason(), what="the alarm on /health")
        hit = stack.get("/broker/alarm/1/w150.jpg")
        assert hit.status == 200 and hit.data == warm.data
    finally:
        rabbitmqctl("set_vm_memory_high_watermark", "0.4")  # the default
    wait_until(lambda: stack.http.request("GET", health).status == 200, what="the alarm cleared")
    wait_until(
        lambda: stack.get("/broker/alarm/1/w154.jpg").status == 200,
        timeout_s=60,
        what="misses served again",
    )
    assert all(stack.alive().values())


def background_get(
    stack: Stack, path: str
) -> tuple[threading.Thread, list[urllib3.BaseHTTPResponse]]:
    answers: list[urllib3.BaseHTTPResponse] = []
    thread = threading.Thread(target=lambda: answers.append(stack.get(path)))
    thread.start()
    return thread, answers


def test_a_full_resize_queue_answers_503_at_once(
    make_stack: Callable[..., Stack], origin: Origin
) -> None:
    stack = make_stack(resize_queue_max_length=1)
    stack.start(processors=0)
    origin.add("full/queue/1/original.jpg", photo())
    # A quorum queue checks its bound after accepting: it takes max_length + 1.
    waiting = [background_get(stack, f"/full/queue/1/w{width}.jpg") for width in (100, 101)]
    wait_until(lambda: stack.vhost.message_count(amqp.RESIZE_QUEUE) == 2, what="queued jobs")
    refused = stack.get("/full/queue/1/w102.jpg")
    assert refused.status == 503
    assert refused.headers["Retry-After"] == "1"
    stack.start_processor(0)  # the queued jobs are still done
    for thread, answers in waiting:
        thread.join(30)
        assert answers[0].status == 200


def test_a_frontend_bounds_the_misses_it_waits_on(
    make_stack: Callable[..., Stack], origin: Origin
) -> None:
    stack = make_stack(max_pending_requests=1)
    stack.start(processors=0)
    origin.add("pending/bound/1/original.jpg", photo())
    waiting, answers = background_get(stack, "/pending/bound/1/w100.jpg")
    wait_until(lambda: stack.vhost.message_count(amqp.RESIZE_QUEUE) == 1, what="one queued job")
    assert stack.get("/pending/bound/1/w102.jpg").status == 503
    stack.start_processor(0)
    waiting.join(30)
    assert answers[0].status == 200


def test_a_job_past_its_timeout_is_abandoned_and_the_worker_survives(
    make_stack: Callable[..., Stack], origin: Origin
) -> None:
    import pyvips

    stack = make_stack(job_timeout_s=0.1, max_source_pixels=100_000_000)
    stack.start(processors=1)
    # 49 Mpx to decode and encode (0.27 s on two cores in raw libvips) in 1 MB to
    # download: the job's time runs out in the resize, not in the download it
    # includes (a 33 MB original, on a loaded machine, once ran out in the download).
    ramp = (pyvips.Image.xyz(7000, 7000)[0] * 255 / 7000).cast("uchar")
    big = ramp.bandjoin([ramp, ramp]).copy(interpretation="srgb").pngsave_buffer(compression=9)
    origin.add("slow/resize/1/original.jpg", big)
    abandoned = stack.get("/slow/resize/1/full_size.jpg")
    # The processor's job_timeout_s (0.1 s), not the frontend's resize_deadline_s, ended it.
    assert abandoned.status == 504
    assert abandoned.data == b"the resize took longer than job_timeout_s\n"
    assert stack.alive()["processor_0"]
    origin.add("slow/resize/2/original.jpg", photo())
    assert stack.get("/slow/resize/2/w100.jpg").status == 200


def test_a_job_that_kills_every_worker_is_dead_lettered(
    make_stack: Callable[..., Stack],
) -> None:
    """Each delivery ends like a crashed worker (channel gone, no ack); RabbitMQ counts them."""
    stack = make_stack(resize_delivery_limit=2)
    stack.start(processors=0)  # the frontend declares the queue
    job = ResizeJob("k/w/1/w1.jpg", "http://127.0.0.1/x.jpg", Fit.WIDTH, 1, None, "jpg", 80, 1e12)
    connection = pika.BlockingConnection(pika.URLParameters(stack.vhost.amqp_url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.basic_publish("", amqp.RESIZE_QUEUE, job.encode(), amqp.persistent())
        deliveries = 0
        while stack.vhost.message_count(amqp.RESIZE_DEAD_QUEUE) == 0 and deliveries < 10:
            crashing = connection.channel()
            method, _props, _body = crashing.basic_get(amqp.RESIZE_QUEUE)
            if method is not None:
                deliveries += 1
            crashing.close()  # unacked: back to the queue, or dead-lettered at the limit
            time.sleep(0.1)
    finally:
        connection.close()
    assert stack.vhost.message_count(amqp.RESIZE_DEAD_QUEUE) == 1
    assert deliveries == 3  # the first delivery plus resize_delivery_limit redeliveries


def test_sigterm_lets_a_frontend_finish_its_requests(
    make_stack: Callable[..., Stack], origin: Origin
) -> None:
    stack = make_stack()
    stack.start(processors=1)
    path = "graceful/frontend/1/original.jpg"
    origin.add(path, photo(), delay_first_s=1.5)
    waiting, answers = background_get(stack, "/graceful/frontend/1/w100.jpg")
    assert origin.started[path].wait(10)
    stack.processes["frontend_0"].send_signal(signal.SIGTERM)
    waiting.join(30)
    assert answers[0].status == 200
    assert stack.processes["frontend_0"].wait(30) == 0
    with pytest.raises(urllib3.exceptions.HTTPError):
        stack.get("/graceful/frontend/1/w100.jpg")


def test_sigterm_lets_a_processor_finish_and_ack_its_job(
    make_stack: Callable[..., Stack], origin: Origin
) -> None:
    stack = make_stack()
    stack.start(processors=1)
    path = "graceful/processor/1/original.jpg"
    origin.add(path, photo(), delay_first_s=1.5)
    waiting, answers = background_get(stack, "/graceful/processor/1/w100.jpg")
    assert origin.started[path].wait(10)
    stack.processes["processor_0"].send_signal(signal.SIGTERM)
    waiting.join(30)
    assert answers[0].status == 200
    assert stack.processes["processor_0"].wait(30) == 0
    assert stack.vhost.message_count(amqp.RESIZE_QUEUE) == 0  # acked, not handed back
    assert origin.hits[path] == 1


def test_an_original_above_max_source_bytes_is_413(
    make_stack: Callable[..., Stack], origin: Origin
) -> None:
    stack = make_stack(max_source_bytes=len(photo()) - 1)
    stack.start(processors=1)
    origin.add("too/large/1/original.jpg", photo())
    response = stack.get("/too/large/1/w100.jpg")
    assert response.status == 413
    assert b"max_source_bytes" in response.data
    assert stack.alive()["processor_0"]


@pytest.mark.stops_broker
def test_broker_restart_under_traffic(make_stack: Callable[..., Stack], origin: Origin) -> None:
    """Requests in flight may fail with 503/504; none hangs, nothing needs a restart."""
    stack = make_stack(resize_deadline_s=5.0)
    stack.start(processors=2)
    origin.add("restart/traffic/1/original.jpg", photo())
    statuses: list[int] = []
    stop = threading.Event()

    def traffic() -> None:
        width = 100
        while not stop.wait(0.05) and width < 1000:  # paced: each URL new, a miss
            statuses.append(stack.get(f"/restart/traffic/1/w{width}.jpg").status)
            width += 1

    client = threading.Thread(target=traffic)
    client.start()
    wait_until(lambda: len(statuses) >= 5, what="traffic flowing")
    rabbitmqctl("stop_app")
    rabbitmqctl("start_app")
    wait_until(
        lambda: statuses[-3:] == [200, 200, 200] and len(statuses) > 10,
        timeout_s=60,
        what="traffic succeeding again",
    )
    stop.set()
    client.join(30)
    assert set(statuses) <= {200, 503, 504}, statuses
    assert 503 in statuses or 504 in statuses  # the restart was felt...
    assert all(stack.alive().values())  # ...and survived without a restart of ours


def test_processor_killed_under_load(make_stack: Callable[..., Stack], origin: Origin) -> None:
    """SIGKILL to a busy processor while it holds a job for sure: that very client,
    and every other one, still gets its image; none hangs."""
    stack = make_stack(resize_deadline_s=20.0)
    stack.start(processors=1)
    victim = "kill/load/victim/original.jpg"
    origin.add(victim, photo(), delay_first_s=6.0)
    origin.add("kill/load/1/original.jpg", photo())
    paths = [f"/kill/load/1/w{width}.jpg" for width in range(100, 160)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        held = pool.submit(stack.get, "/kill/load/victim/w300.jpg")
        # processor_0 (the only one yet) is downloading the victim's original:
        # its job is in flight, unacked, when the signal lands.
        assert origin.started[victim].wait(10)
        stack.start_processor(1)
        answers = [pool.submit(stack.get, path) for path in paths]
        wait_until(
            lambda: stack.outputs_made("processor_0", "kill/load/1/") >= 3,
            what="processor_0 busy with the load too",
        )
        assert not held.done()
        stack.kill("processor_0")  # SIGKILL, in the middle of the load and of the job
        statuses = [answer.result().status for answer in answers]
        victim_answer = held.result()
    assert statuses == [200] * len(paths)
    assert victim_answer.status == 200 and decode(victim_answer.data).width == 300
    assert origin.hits[victim] == 2  # the job was redelivered and done again
    assert stack.alive()["processor_1"]


def drop_connections(stack: Stack, program: str) -> int:
    """Close, from RabbitMQ's side, every connection of `program` (frontend_0...) to
    the stack's vhost; how many there were."""
    path = f"/vhosts/{urllib.parse.quote(stack.vhost.name, safe='')}/connections"

    def named() -> list[str]:
        return [
            connection["name"]
            for connection in management("GET", path)
            if connection.get("client_properties", {})
            .get("connection_name", "")
            .startswith(program)
        ]

    wait_until(lambda: bool(named()), what=f"{program}'s connection listed")
    dropped = named()
    for name in dropped:
        management("DELETE", f"/connections/{urllib.parse.quote(name, safe='')}")
    return len(dropped)


def test_misses_in_flight_are_answered_at_once_when_rabbitmq_drops_the_connection(
    make_stack: Callable[..., Stack], origin: Origin
) -> None:
    """Not left to wait for resize_deadline_s: their replies can never come on a
    new connection (direct reply-to belongs to the lost one)."""
    long = {"resize_deadline_s": 120.0, "job_timeout_s": 120.0, "source_download_timeout_s": 120.0}
    stack = make_stack(**long).start(processors=1)
    path = "dropped/conn/1/original.jpg"
    origin.add(path, photo()[:30_000], trickle_interval_s=0.2)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(stack.get, "/dropped/conn/1/w100.jpg")  # the client waits 30 s
        assert origin.started[path].wait(10)
        assert drop_connections(stack, "frontend_0") == 1
        answer = waiting.result()
    assert answer.status == 503 and b"RabbitMQ" in answer.data
    origin.add("dropped/conn/2/original.jpg", photo())
    wait_until(
        lambda: stack.get("/dropped/conn/2/w100.jpg").status == 200, what="the frontend reconnected"
    )
    # Its first job still trickles in for two minutes: a graceful stop would wait for it.
    stack.kill("processor_0")
