"""The life of a blocking RabbitMQ consumer, shared by the processor and the uploader.

Connect, let the role set up its channels, consume, poll until asked to stop,
then stop consuming and give the messages in hand `STOP_GRACE_S` to finish
and be acked; reconnect whenever RabbitMQ goes away. pika runs on the
calling thread only: a role that works on other threads hands each outcome
back with `connection.add_callback_threadsafe`.

A role supplies the hooks of `ConsumerRole`; the skeleton owns the loop, the
"serving" gauge and the connection.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from prometheus_client import Gauge

from common import amqp
from common.config import Settings

log = logging.getLogger(__name__)
POLL_S = 0.2  # how long pika waits for network events between two looks at the role
STOP_GRACE_S = 30.0  # a graceful stop waits this long for the messages in hand

OnMessage = Callable[..., None]  # pika's (channel, method, properties, body)


class ConsumerRole(Protocol):
    queues: tuple[str, ...]  # the queues consumed (each message to the same callback)

    def set_up(self, connection: BlockingConnection, channel: BlockingChannel) -> OnMessage:
        """Declare, qos and any channel of the role's own on a new connection;
        return the callback of each message of its `queues`."""
        ...

    def between_polls(self, channel: BlockingChannel) -> None:
        """Whatever the role does on pika's thread between two polls."""
        ...

    def in_hand(self) -> int:
        """Messages taken and not yet acked or rejected."""
        ...

    def tear_down(self) -> None:
        """The connection is gone or closing: drop what belonged to it."""
        ...


class Consumer:
    def __init__(
        self, settings: Settings, role: ConsumerRole, serving: Gauge, stop: threading.Event
    ) -> None:
        self._settings = settings
        self._role = role
        self._serving = serving
        self._stop = stop

    def run(self) -> None:
        """Consume until asked to stop; reconnect whenever RabbitMQ goes away."""
        amqp.consume_until_stopped(self._consume, self._stop, self._settings)

    def _consume(self) -> None:
        connection = amqp.blocking_connection(self._settings)
        try:
            channel = connection.channel()
            on_message = self._role.set_up(connection, channel)
            consumer_tags = [channel.basic_consume(q, on_message) for q in self._role.queues]
            log.info("consuming %s", ", ".join(self._role.queues))
            self._serving.set(1)
            while not self._stop.is_set():
                connection.process_data_events(time_limit=POLL_S)
                self._role.between_polls(channel)
            self._serving.set(0)
            for consumer_tag in consumer_tags:
                channel.basic_cancel(consumer_tag)
            # Graceful stop: the messages in hand finish and are acked.
            give_up = time.monotonic() + STOP_GRACE_S
            while self._role.in_hand() and time.monotonic() < give_up:
                connection.process_data_events(time_limit=POLL_S)
        finally:
            self._serving.set(0)
            self._role.tear_down()
            if connection.is_open:
                connection.close()
