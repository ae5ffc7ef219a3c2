"""Faults, provoked for real: killed processors, a stopped broker, slow sources."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pika
import urllib3

from common import amqp
from tests.harness import Origin, Stack, rabbitmqctl, wait_until
from tests.images import decode, photo


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


def test_broker_stopped_hits_still_served_misses_503_then_recovers(
    make_stack: Callable[..., Stack], origin: Origin
) -> None:
    stack = make_stack()
    stack.start(processors=1)
    origin.add("broker/down/1/original.jpg", photo())
    warm = stack.get("/broker/down/1/w150.jpg")
    assert warm.status == 200
    rabbitmqctl("stop_app")
    try:
        health = f"http://127.0.0.1:{stack.config['status_port']}/health"
        wait_until(lambda: stack.http.request("GET", health).status == 503, what="broker lost")
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
    assert all(stack.alive().values())
