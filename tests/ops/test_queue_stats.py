"""The status server's queue dynamics, read from the real RabbitMQ's management
API: unacked messages, rates in and out, and the time to drain at that rate."""

from __future__ import annotations

import time

import pytest

from common import amqp
from ops.status.host_figures import QueueFigures, Queues
from tests.support.ports import free_port
from tests.support.rabbitmq import Vhost
from tests.support.settings import configured

pytestmark = pytest.mark.stack


def test_unacked_messages_and_rates_in_and_out_come_from_the_management_api(
    vhost: Vhost,
) -> None:
    settings = configured(amqp_url=vhost.amqp_url)
    connection = vhost.connect()
    channel = connection.channel()
    amqp.declare(channel, amqp.upload_queues(settings))
    queues = Queues(settings)
    held: list[int] = []  # delivery tags taken and not yet acked: 5 at most
    seen: QueueFigures | None = None
    try:
        # 10 published a second, 5 taken and acked a second, 5 always in hand.
        give_up = time.monotonic() + 45
        while time.monotonic() < give_up:
            for tick in range(10):
                channel.basic_publish("", amqp.UPLOAD_QUEUE, b"upload", amqp.persistent())
                if tick % 2 == 0:
                    method, _, _ = channel.basic_get(amqp.UPLOAD_QUEUE)
                    if method is not None:
                        held.append(method.delivery_tag)
                if len(held) > 5:
                    channel.basic_ack(held.pop(0))
                time.sleep(0.1)
            figures, broker_problem, stats_problem = queues.read()
            assert broker_problem is None and stats_problem is None
            seen = next(q for q in figures if q.name == amqp.UPLOAD_QUEUE)
            # RabbitMQ's rates need two of its samples (5 s apart) with traffic.
            if seen.unacked == 5 and seen.in_per_s and seen.out_per_s:
                break
    finally:
        queues.close()
        connection.close()
    print(seen)
    assert seen is not None and seen.unacked == 5, seen
    assert seen.in_per_s is not None and 6 <= seen.in_per_s <= 14, seen
    assert seen.out_per_s is not None and 3 <= seen.out_per_s <= 7, seen
    assert seen.messages is not None and seen.messages > 0
    assert seen.drain_s == round(seen.messages / seen.out_per_s, 1)
    dead = next(q for q in figures if q.name == amqp.UPLOAD_DEAD_QUEUE)
    assert (dead.unacked, dead.in_per_s, dead.out_per_s, dead.drain_s) == (0, 0.0, 0.0, 0.0)


def test_without_the_management_api_the_counts_remain_and_the_page_says_why(
    vhost: Vhost,
) -> None:
    settings = configured(amqp_url=vhost.amqp_url, amqp_management_port=free_port())
    connection = vhost.connect()
    amqp.declare(connection.channel(), amqp.upload_queues(settings))
    connection.close()
    queues = Queues(settings)
    try:
        figures, broker_problem, stats_problem = queues.read()
    finally:
        queues.close()
    assert broker_problem is None
    assert stats_problem is not None and "management API: 127.0.0.1: URLError" in stats_problem
    upload = next(q for q in figures if q.name == amqp.UPLOAD_QUEUE)
    assert (upload.messages, upload.consumers, upload.unacked) == (0, 0, None)
