"""Queue names, their arguments and connection parameters, declared in one place."""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from typing import Any

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel
from pika.adapters.select_connection import SelectConnection
from pika.adapters.tornado_connection import TornadoConnection
from pika.channel import Channel

from common.config import Settings

log = logging.getLogger(__name__)

RESIZE_QUEUE = "image.resize"
RESIZE_DEAD_QUEUE = "image.resize.dead"
# Work ahead of requests (popular outputs, POST pre-generation): taken by a
# processor only while it has no request's job in hand.
BACKGROUND_QUEUE = "image.resize.background"
UPLOAD_QUEUE = "image.upload"
UPLOAD_DEAD_QUEUE = "image.upload.dead"
_UPLOAD_DELAY_PREFIX = "image.upload.delay."
UPLOAD_DELIVERY_LIMIT = 5
DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
# Purges (PurgeImage) reach every frontend and processor of every host: each
# binds a queue of its own (exclusive, server-named) to this fanout exchange.
PURGE_EXCHANGE = "image.purge"


def resize_queue_arguments(settings: Settings) -> dict[str, Any]:
    # A quorum queue counts deliveries, so a job that kills every worker that
    # takes it is dead-lettered after resize_delivery_limit attempts instead
    # of looping forever; reject-publish bounds the backlog (the frontend
    # answers 503 when its publish is nacked).
    return {
        "x-queue-type": "quorum",
        "x-max-length": settings.resize_queue_max_length,
        "x-overflow": "reject-publish",
        "x-delivery-limit": settings.resize_delivery_limit,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": RESIZE_DEAD_QUEUE,
    }


def background_queue_arguments(settings: Settings) -> dict[str, Any]:
    # Bounded like image.resize; past the bound new background work is refused
    # (nothing waits on it: it is logged and dropped). Undecodable or
    # worker-killing jobs go to the same dead-letter queue as requests'.
    return {
        **resize_queue_arguments(settings),
        "x-max-length": settings.background_queue_max_length,
    }


def bind_purge_queue(channel: BlockingChannel) -> str:
    """A queue of this connection's own on the purge fanout (blocking channel); its name."""
    channel.exchange_declare(PURGE_EXCHANGE, "fanout", durable=True)
    queue = str(channel.queue_declare("", exclusive=True, auto_delete=True).method.queue)
    channel.queue_bind(queue, PURGE_EXCHANGE)
    return queue


class _OneSendPerMessage:
    """pika hands each frame of a message (method, header, body) to the socket
    on its own: three send() calls, three TCP segments and three wake-ups of
    the broker per publish, each costing both sides about 0.3 ms of CPU on
    these machines (bench/TUNING.md). One send per message instead."""

    def _output_marshaled_frames(self, marshaled_frames: list[bytes]) -> None:
        super()._output_marshaled_frames([b"".join(marshaled_frames)])  # type: ignore[misc]


class _SelectConnection(_OneSendPerMessage, SelectConnection):  # type: ignore[misc]
    """What a BlockingConnection of ours runs on."""


class AsyncConnection(_OneSendPerMessage, TornadoConnection):  # type: ignore[misc]
    """A connection on Tornado's event loop (the frontend's)."""


def blocking_connection(settings: Settings) -> pika.BlockingConnection:
    return pika.BlockingConnection(connection_parameters(settings), _impl_class=_SelectConnection)


def connection_parameters(settings: Settings) -> pika.URLParameters:
    params = pika.URLParameters(settings.amqp_url)
    params.connection_attempts = 1
    params.socket_timeout = 5
    params.blocked_connection_timeout = 30
    return params


def upload_delay_queue(delay_s: float) -> str:
    """The queue where a failed upload waits `delay_s` before its retry.

    Named by its delay, so a change of upload_retry_delays_s declares new
    queues instead of clashing with the TTL of existing ones.
    """
    return f"{_UPLOAD_DELAY_PREFIX}{round(delay_s * 1000)}ms"


def is_upload_delay_queue(name: str) -> bool:
    return name.startswith(_UPLOAD_DELAY_PREFIX)


@dataclasses.dataclass(frozen=True)
class QueueSpec:
    """A durable queue as every program declares it (a declaration that differs
    from the queue RabbitMQ has is refused: there is one spelling, here)."""

    name: str
    arguments: dict[str, Any] = dataclasses.field(default_factory=dict)


def resize_queues(settings: Settings) -> list[QueueSpec]:
    """image.resize, image.resize.background and their dead-letter queue."""
    return [
        QueueSpec(RESIZE_DEAD_QUEUE),
        QueueSpec(BACKGROUND_QUEUE, background_queue_arguments(settings)),
        QueueSpec(RESIZE_QUEUE, resize_queue_arguments(settings)),
    ]


def upload_queues(settings: Settings) -> list[QueueSpec]:
    """image.upload, its dead-letter queue, and one delay queue per retry.

    A failed upload is published to the delay queue of its attempt; its TTL
    expires and RabbitMQ dead-letters it back into image.upload. No consumer
    sleeps. Delays come from upload_retry_delays_s.
    """
    upload_arguments = {
        "x-queue-type": "quorum",
        "x-delivery-limit": UPLOAD_DELIVERY_LIMIT,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": UPLOAD_DEAD_QUEUE,
    }
    delays = [
        QueueSpec(
            upload_delay_queue(delay_s),
            {
                "x-message-ttl": round(delay_s * 1000),
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": UPLOAD_QUEUE,
            },
        )
        for delay_s in settings.upload_retry_delays_s
    ]
    return [QueueSpec(UPLOAD_DEAD_QUEUE), QueueSpec(UPLOAD_QUEUE, upload_arguments), *delays]


def declare(channel: BlockingChannel, queues: list[QueueSpec]) -> None:
    """Declare `queues` on a blocking channel."""
    for queue in queues:
        channel.queue_declare(queue.name, durable=True, arguments=queue.arguments)


def declare_then(channel: Channel, queues: list[QueueSpec], then: Callable[[Any], None]) -> None:
    """Declare `queues` on an asynchronous channel (the frontend's); `then` once
    the last is declared (a channel answers in order)."""
    *first, last = queues
    for queue in first:
        channel.queue_declare(queue.name, durable=True, arguments=queue.arguments)
    channel.queue_declare(last.name, durable=True, arguments=last.arguments, callback=then)


def persistent(
    correlation_id: str | None = None, reply_to: str | None = None
) -> pika.BasicProperties:
    return pika.BasicProperties(
        delivery_mode=pika.DeliveryMode.Persistent,
        correlation_id=correlation_id,
        reply_to=reply_to,
    )


def consume_until_stopped(
    consume: Callable[[], None], stop: threading.Event, settings: Settings
) -> None:
    """Run a blocking consumer until `stop` is set, reconnecting whenever RabbitMQ goes away."""
    while not stop.is_set():
        try:
            consume()
        except pika.exceptions.AMQPError as exc:
            log.warning("RabbitMQ connection lost (%s); reconnecting", type(exc).__name__)
            stop.wait(settings.amqp_reconnect_delay_s)
