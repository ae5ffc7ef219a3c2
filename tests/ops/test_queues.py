"""`image-server queues` on a vhost laid out by an older release, on the real RabbitMQ:
queues that differ are rebuilt with their messages, obsolete ones go once empty."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pika
import pytest

from common import amqp
from common.spill import upload_host
from ops.queues import bring_up_to_date
from tests.support.rabbitmq import Vhost, management
from tests.support.settings import configured

pytestmark = pytest.mark.stack


def queue_types(vhost: Vhost) -> dict[str, str]:
    rows = management("GET", f"/queues/{vhost.name}")
    return {row["name"]: row["type"] for row in rows}


def drain(channel: pika.adapters.blocking_connection.BlockingChannel, queue: str) -> list[Any]:
    taken: list[Any] = []
    while True:
        method, properties, body = channel.basic_get(queue, auto_ack=True)
        if method is None:
            return taken
        headers = dict(properties.headers)
        assert headers.pop("x-delivery-count") == 0  # a quorum queue's, and its first delivery
        taken.append((body, headers, properties.delivery_mode))


def test_an_older_layout_is_rebuilt_and_keeps_every_message(vhost: Vhost, tmp_path: Path) -> None:
    settings = configured(
        amqp_url=vhost.amqp_url,
        resize_queue_max_length=500,
        upload_retry_delays_s=[1, 30],
        spill_path=str(tmp_path),
    )
    host = upload_host(tmp_path)
    this_host = amqp.host_upload_queue(host)
    connection = pika.BlockingConnection(pika.URLParameters(vhost.amqp_url))
    channel = connection.channel()
    channel.confirm_delivery()
    # As the release before quorum dead-letter queues, with another resize bound.
    channel.queue_declare(amqp.UPLOAD_DEAD_QUEUE, durable=True)
    channel.queue_declare(amqp.RESIZE_DEAD_QUEUE, durable=True)
    channel.queue_declare(
        amqp.RESIZE_QUEUE,
        durable=True,
        arguments={**amqp.resize_queue_arguments(settings), "x-max-length": 100},
    )
    # As the release before host queues expired.
    (as_declared,) = [q for q in amqp.upload_queues(settings, host) if q.name == this_host]
    before = {k: v for k, v in as_declared.arguments.items() if k != "x-expires"}
    channel.queue_declare(this_host, durable=True, arguments=before)
    channel.basic_publish("", this_host, b"held", amqp.persistent())
    for old in ("image.upload.delay.1000ms", "image.upload.delay.30000ms"):
        channel.queue_declare(old, durable=True, arguments={"x-message-ttl": 600_000})
    dead = [(f"dead {n}".encode(), {"n": n}, 2) for n in range(5)]
    for body, headers, mode in dead:
        channel.basic_publish(
            "", amqp.UPLOAD_DEAD_QUEUE, body,
            pika.BasicProperties(delivery_mode=mode, headers=headers),
        )  # fmt: skip
    channel.basic_publish("", amqp.RESIZE_QUEUE, b"a job", amqp.persistent())
    channel.basic_publish("", "image.upload.delay.30000ms", b"waiting", amqp.persistent())

    with pytest.raises(pika.exceptions.ChannelClosedByBroker):  # what a program meets
        amqp.declare(connection.channel(), amqp.upload_queues(settings))

    done = bring_up_to_date(settings)

    assert f"{amqp.UPLOAD_DEAD_QUEUE}: declared anew, 5 message(s) kept" in done
    assert f"{amqp.RESIZE_DEAD_QUEUE}: declared anew, 0 message(s) kept" in done
    assert f"{amqp.RESIZE_QUEUE}: declared anew, 1 message(s) kept" in done
    assert f"{this_host}: declared anew, 1 message(s) kept" in done
    assert "image.upload.delay.1000ms: obsolete and empty, deleted" in done
    assert any(line.startswith("image.upload.delay.30000ms: obsolete, 1 upload") for line in done)
    types = queue_types(vhost)
    assert "image.upload.delay.1000ms" not in types
    assert all(
        types[queue.name] == "quorum"
        for queue in [*amqp.resize_queues(settings), *amqp.upload_queues(settings)]
    ), types
    assert not [name for name in types if name.endswith(".migrating")]
    channel = connection.channel()
    amqp.declare(channel, [*amqp.resize_queues(settings), *amqp.upload_queues(settings)])
    assert sorted(drain(channel, amqp.UPLOAD_DEAD_QUEUE)) == dead  # bodies, headers, persistence
    assert [body for body, _, _ in drain(channel, amqp.RESIZE_QUEUE)] == [b"a job"]
    assert bring_up_to_date(settings) == [
        "image.upload.delay.30000ms: obsolete, 1 upload(s) still drain from it by TTL"
    ]
    connection.close()
