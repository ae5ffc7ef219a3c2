"""Queue names, their arguments and connection parameters, declared in one place."""

from __future__ import annotations

import dataclasses
import logging
import random
import socket
import sys
import threading
import urllib.parse
import zlib
from collections.abc import Callable
from typing import Any

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel
from pika.adapters.select_connection import SelectConnection
from pika.adapters.tornado_connection import TornadoConnection
from pika.channel import Channel

from common.settings import Settings

log = logging.getLogger(__name__)

RESIZE_QUEUE = "image.resize"
RESIZE_DEAD_QUEUE = "image.resize.dead"
# Work ahead of requests (popular outputs, POST pre-generation): taken by a
# processor only while it has no request's job in hand.
BACKGROUND_QUEUE = "image.resize.background"
UPLOAD_QUEUE = "image.upload"
UPLOAD_DEAD_QUEUE = "image.upload.dead"
# Quorum queues since the broker cluster's tests (a classic queue lives on one
# node: while it is down, that queue refuses every declare, and so every
# program's reconnection). Before, the delay queues were classic and named
# image.upload.delay.<ms>ms: left alone, they drain into image.upload by their
# TTL (`image-server queues` deletes them once empty).
_UPLOAD_DELAY_PREFIX = "image.upload.retry."
HOST_UPLOAD_PREFIX = "image.upload.host."
_HOST_DELAY_INFIX = ".retry."
OLD_UPLOAD_DELAY_PREFIX = "image.upload.delay."
UPLOAD_DELIVERY_LIMIT = 5
DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
PRECONDITION_FAILED = 406  # a queue declared with other arguments than the broker's
# Purges (PurgeImage) reach every frontend and processor of every host: each
# binds a queue of its own (exclusive, server-named) to this fanout exchange.
PURGE_EXCHANGE = "image.purge"


# Every durable queue of ours is a quorum queue: replicated over the cluster's
# nodes, it survives a node lost (a classic queue lives on one node, and while it
# is down refuses every declare and loses what is published to it).
REPLICATED: dict[str, Any] = {"x-queue-type": "quorum"}


def resize_queue_arguments(settings: Settings) -> dict[str, Any]:
    # A quorum queue counts deliveries, so a job that kills every worker that
    # takes it is dead-lettered after resize_delivery_limit attempts instead
    # of looping forever; reject-publish bounds the backlog (the frontend
    # answers 503 when its publish is nacked).
    return {
        **REPLICATED,
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
    """A connection to the next node that answers (pika tries them in turn)."""
    return pika.BlockingConnection(_NODES.rotation(settings), _impl_class=_SelectConnection)


def identify(program: str, process_num: int) -> None:
    """Name this process' connections `<program>_<N>@<host>` and pick its first node."""
    _NODES.identify(program, process_num)


def next_node(settings: Settings) -> pika.URLParameters:
    """The node an asynchronous connection (one node per attempt) tries next."""
    return _NODES.rotation(settings)[0]


def node_parameters(settings: Settings) -> list[pika.URLParameters]:
    """One set of parameters per RabbitMQ node: amqp_url itself, or amqp_url's
    credentials and vhost on each of amqp_nodes."""
    parts = urllib.parse.urlsplit(settings.amqp_url)
    credentials = parts.netloc.rpartition("@")[0]
    urls = [
        parts._replace(netloc=f"{credentials}@{node}" if credentials else node).geturl()
        for node in settings.amqp_nodes
    ] or [settings.amqp_url]
    return [_parameters(url) for url in urls]


def _parameters(url: str) -> pika.URLParameters:
    params = pika.URLParameters(url)
    params.connection_attempts = 1
    params.socket_timeout = 5
    params.blocked_connection_timeout = 30
    params.client_properties = {"connection_name": _NODES.connection_name}
    return params


class NodeRotation:
    """The order in which this process tries the nodes. A program starts at node
    (process number + a number of its host) mod the nodes, so that the processes of
    a host, and the hosts, spread over the cluster; a tool at a random one. Each new
    connection starts one node further: after a node is lost, its clients try the
    next one first instead of the lost one again."""

    def __init__(self) -> None:
        self._next = random.randrange(1 << 16)
        # How the management console and `rabbitmqctl list_connections` name us.
        self.connection_name = f"{sys.argv[0].rsplit('/', 1)[-1]}@{socket.gethostname()}"

    def identify(self, program: str, process_num: int) -> None:
        host = socket.gethostname()
        self._next = process_num + zlib.crc32(host.encode())
        self.connection_name = f"{program}_{process_num}@{host}"

    def rotation(self, settings: Settings) -> list[pika.URLParameters]:
        nodes = node_parameters(settings)
        start = self._next % len(nodes)
        self._next += 1
        return nodes[start:] + nodes[:start]


_NODES = NodeRotation()


def upload_delay_queue(delay_s: float, host: str = "") -> str:
    """The queue where a failed upload waits `delay_s` before its retry (an
    upload by reference: in its host's own, which leads back to its host's queue).

    Named by its delay, so a change of upload_retry_delays_s declares new
    queues instead of clashing with the TTL of existing ones.
    """
    if host:
        return f"{host_upload_queue(host)}{_HOST_DELAY_INFIX}{round(delay_s * 1000)}ms"
    return f"{_UPLOAD_DELAY_PREFIX}{round(delay_s * 1000)}ms"


def is_upload_delay_queue(name: str) -> bool:
    return name.startswith(_UPLOAD_DELAY_PREFIX) or (
        name.startswith(HOST_UPLOAD_PREFIX) and _HOST_DELAY_INFIX in name
    )


def is_upload_queue(name: str) -> bool:
    """image.upload, or a host's queue of uploads by reference (not a delay queue)."""
    return name == UPLOAD_QUEUE or (
        name.startswith(HOST_UPLOAD_PREFIX) and not is_upload_delay_queue(name)
    )


def host_upload_queue(host: str) -> str:
    """The uploads by reference of one host (common.spill.HeldUploads.host): each
    names a file that only that host's uploader can read."""
    return f"{HOST_UPLOAD_PREFIX}{host}"


@dataclasses.dataclass(frozen=True)
class QueueSpec:
    """A durable queue as every program declares it (a declaration that differs
    from the queue RabbitMQ has is refused: there is one spelling, here)."""

    name: str
    arguments: dict[str, Any] = dataclasses.field(default_factory=dict)


def resize_queues(settings: Settings) -> list[QueueSpec]:
    """image.resize, image.resize.background and their dead-letter queue."""
    return [
        QueueSpec(RESIZE_DEAD_QUEUE, REPLICATED),
        QueueSpec(BACKGROUND_QUEUE, background_queue_arguments(settings)),
        QueueSpec(RESIZE_QUEUE, resize_queue_arguments(settings)),
    ]


def upload_queues(settings: Settings, host: str = "") -> list[QueueSpec]:
    """image.upload, its dead-letter queue, and one delay queue per retry; and,
    given a `host`, the same for its uploads by reference (its queue and its
    delay queues; their dead letters go to image.upload.dead too).

    A failed upload is published to the delay queue of its attempt; its TTL
    expires and RabbitMQ dead-letters it back into the queue it came from. No
    consumer sleeps. Delays come from upload_retry_delays_s.
    """
    upload_arguments = {
        **REPLICATED,
        "x-delivery-limit": UPLOAD_DELIVERY_LIMIT,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": UPLOAD_DEAD_QUEUE,
    }
    # Each upload waiting for its retry goes back to its queue at least once,
    # even when a node is lost as its TTL expires (RabbitMQ's at-least-once
    # dead-lettering, which needs reject-publish; nothing bounds these queues).
    retried_into = {"": UPLOAD_QUEUE} | ({host: host_upload_queue(host)} if host else {})
    # A host's queues go once unused for upload_host_queue_expiry_s: its uploader
    # consumes from one and declares them all again now and then.
    expiry = {"x-expires": round(settings.upload_host_queue_expiry_s * 1000)}
    delays = [
        QueueSpec(
            upload_delay_queue(delay_s, of_host),
            {
                **REPLICATED,
                "x-message-ttl": round(delay_s * 1000),
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": queue,
                "x-dead-letter-strategy": "at-least-once",
                "x-overflow": "reject-publish",
                **(expiry if of_host else {}),
            },
        )
        for of_host, queue in retried_into.items()
        for delay_s in settings.upload_retry_delays_s
    ]
    return [
        QueueSpec(UPLOAD_DEAD_QUEUE, REPLICATED),
        *(
            QueueSpec(queue, upload_arguments | (expiry if of_host else {}))
            for of_host, queue in retried_into.items()
        ),
        *delays,
    ]


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
            log.warning("RabbitMQ connection lost (%s); reconnecting", why_closed(exc))
            stop.wait(settings.amqp_reconnect_delay_s)


def why_closed(exc: BaseException) -> str:
    """What RabbitMQ said, and for a queue declared differently what to run."""
    if isinstance(exc, pika.exceptions.ChannelClosedByBroker):
        if exc.reply_code == PRECONDITION_FAILED:
            return f"{exc.reply_text}: run `image-server queues` (docs/operations.md, Upgrading)"
        return str(exc.reply_text)
    if isinstance(exc, pika.exceptions.ConnectionClosedByBroker):
        return f"closed by RabbitMQ: {exc.reply_code} {exc.reply_text}"
    if isinstance(exc, pika.exceptions.NackError):
        return "RabbitMQ refused a publish (nack); a new connection asks again"
    return type(exc).__name__
