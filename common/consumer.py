"""The life of a blocking RabbitMQ consumer and of each message it takes, shared
by the processor and the uploader (as dramatiq's worker owns its messages).

Connect, let the role set up its channels, consume, poll until asked to stop,
then stop consuming and give the messages in hand `STOP_GRACE_S` to finish
and be acked; reconnect whenever RabbitMQ goes away.

Each message: decoded on pika's thread (one that does not decode is
dead-lettered), admitted or acked at once (`admit`), handled on the role's
pool (`handle`), then settled back on pika's thread (`settle`: replies,
publishes) and acked there, in one place. A handler that crashes costs its
message (dead-lettered), never the program. pika runs on the consuming
thread only: work on other threads goes back through
`Delivery.on_pika_thread`.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import logging
import threading
import time
from typing import Any, Generic, TypeVar

import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika.spec import Basic, BasicProperties
from prometheus_client import Gauge

from common import amqp
from common.errors import MessageDecodeError
from common.settings import Settings

log = logging.getLogger(__name__)
POLL_S = 0.2  # how long pika waits for network events between two looks at the role
STOP_GRACE_S = 30.0  # a graceful stop waits this long for the messages in hand

Message = TypeVar("Message")
Outcome = TypeVar("Outcome")


@dataclasses.dataclass(frozen=True)
class Delivery:
    """One message taken from a queue, as pika gave it."""

    connection: BlockingConnection
    channel: BlockingChannel
    method: Basic.Deliver | Basic.GetOk
    properties: BasicProperties

    def on_pika_thread(self, callback: Any) -> bool:
        """Run `callback` on pika's thread; False when the connection is gone."""
        try:
            self.connection.add_callback_threadsafe(callback)
        except pika.exceptions.AMQPError:
            return False
        return True


class ConsumerRole(Generic[Message, Outcome]):
    """What a program consumes and how it handles each message. The hooks
    without a default are the role's own; every hook but `handle` and
    `afterwards` runs on pika's thread."""

    queues: tuple[str, ...] = ()  # consumed, each message to the same life
    thread_name = "handler"  # of the pool's threads
    concurrency = 1  # the pool's threads (and the prefetch a role sets)

    def decode(self, body: bytes) -> Message:
        """The message of `body`; MessageDecodeError dead-letters it."""
        raise NotImplementedError

    def set_up(self, connection: BlockingConnection, channel: BlockingChannel) -> None:
        """Declare, qos and any channel of the role's own on a new connection."""
        raise NotImplementedError

    def admit(self, message: Message, delivery: Delivery) -> bool:
        """Whether to handle it; False acks it unhandled (a job past its deadline)."""
        return True

    def handle(self, message: Message, delivery: Delivery) -> Outcome:
        """On a pool thread: the work."""
        raise NotImplementedError

    def settle(self, message: Message, outcome: Outcome, delivery: Delivery) -> None:
        """Answer, publish what follows from it; the message is acked right after."""
        raise NotImplementedError

    def afterwards(
        self, message: Message, outcome: Outcome, delivery: Delivery, settling: bool
    ) -> None:
        """On the pool thread, once its settling is on its way (`settling`), or
        when the connection was gone first (the message will be redelivered)."""

    def between_polls(self, session: Session) -> None:
        """Whatever the role does on pika's thread between two polls."""

    def tear_down(self) -> None:
        """The connection is gone or closing: drop what belonged to it."""


class Session:
    """One connection's consuming, as the role's `between_polls` sees it."""

    def __init__(
        self, consumer: Consumer, connection: BlockingConnection, channel: BlockingChannel
    ) -> None:
        self._consumer = consumer
        self.connection = connection
        self.channel = channel
        self.in_hand = 0  # messages taken and not yet acked or rejected
        role = consumer.role
        self.pool = concurrent.futures.ThreadPoolExecutor(role.concurrency, role.thread_name)

    def take(self, queue: str) -> bool:
        """One message of `queue` (basic_get), given the same life as a consumed
        one; False when the queue had none."""
        method, properties, body = self.channel.basic_get(queue)
        if method is None:
            return False
        self._consumer.on_message(self, self.channel, method, properties, body)
        return True


class Consumer:
    def __init__(
        self,
        settings: Settings,
        role: ConsumerRole[Any, Any],
        serving: Gauge,
        stop: threading.Event,
    ) -> None:
        self._settings = settings
        self.role = role
        self._serving = serving
        self._stop = stop

    def run(self) -> None:
        """Consume until asked to stop; reconnect whenever RabbitMQ goes away."""
        amqp.consume_until_stopped(self._consume, self._stop, self._settings)

    def _consume(self) -> None:
        connection = amqp.blocking_connection(self._settings)
        session: Session | None = None
        try:
            channel = connection.channel()
            self.role.set_up(connection, channel)
            session = Session(self, connection, channel)
            on_message = functools.partial(self.on_message, session)
            consumer_tags = [channel.basic_consume(q, on_message) for q in self.role.queues]
            log.info("consuming %s", ", ".join(self.role.queues))
            self._serving.set(1)
            while not self._stop.is_set():
                connection.process_data_events(time_limit=POLL_S)
                self.role.between_polls(session)
            self._serving.set(0)
            for consumer_tag in consumer_tags:
                channel.basic_cancel(consumer_tag)
            # Graceful stop: the messages in hand finish and are acked.
            give_up = time.monotonic() + STOP_GRACE_S
            while session.in_hand and time.monotonic() < give_up:
                connection.process_data_events(time_limit=POLL_S)
        finally:
            self._serving.set(0)
            if session is not None:
                session.pool.shutdown(wait=False, cancel_futures=True)
            self.role.tear_down()
            if connection.is_open:
                connection.close()

    # --- each message's life -----------------------------------------------------

    def on_message(
        self,
        session: Session,
        channel: BlockingChannel,
        method: Basic.Deliver | Basic.GetOk,
        properties: BasicProperties,
        body: bytes,
    ) -> None:
        """On pika's thread: a message taken."""
        delivery = Delivery(session.connection, channel, method, properties)
        try:
            message = self.role.decode(body)
        except MessageDecodeError as exc:
            log.error("dead-lettering an undecodable message: %s", exc.message)
            channel.basic_reject(method.delivery_tag, requeue=False)
            return
        if not self.role.admit(message, delivery):
            channel.basic_ack(method.delivery_tag)
            return
        session.in_hand += 1
        session.pool.submit(self._handle, session, message, delivery)

    def _handle(self, session: Session, message: Any, delivery: Delivery) -> None:
        """On a pool thread: handle, then settle and ack on pika's thread."""
        try:
            outcome = self.role.handle(message, delivery)
        except Exception:  # a bug costs one message, never the program
            log.exception("handling a message of %s crashed", delivery.method.routing_key)
            delivery.on_pika_thread(functools.partial(self._crashed, session, delivery))
            return
        settle = functools.partial(self._settle, session, message, outcome, delivery)
        settling = delivery.on_pika_thread(settle)
        try:
            self.role.afterwards(message, outcome, delivery, settling)
        except Exception:
            log.exception("the work after a message of %s crashed", delivery.method.routing_key)

    def _settle(self, session: Session, message: Any, outcome: Any, delivery: Delivery) -> None:
        session.in_hand -= 1
        self.role.settle(message, outcome, delivery)
        delivery.channel.basic_ack(delivery.method.delivery_tag)

    def _crashed(self, session: Session, delivery: Delivery) -> None:
        session.in_hand -= 1
        delivery.channel.basic_reject(delivery.method.delivery_tag, requeue=False)
