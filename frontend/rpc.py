"""Request/reply over RabbitMQ on Tornado's event loop (no thread per request).

One connection and one channel per frontend process. Replies come back on
direct reply-to (`amq.rabbitmq.reply-to`), matched by correlation_id;
publishes are confirmed, and a nack (the queue is full) becomes `QueueFull`.
When RabbitMQ goes away every waiting call fails with `BrokerUnavailable`
and the client reconnects by itself. While RabbitMQ blocks publishers (its
memory or disk alarm: `connection.blocked`), every call fails at once with
`BrokerBlocked`, and so do the calls that were waiting: a publish would only
hang until the alarm clears. Calls succeed again on `connection.unblocked`.
A reply that comes after its call timed out is still handed to the caller's
`on_late` (the frontend charges the client for it and keeps what it made).

A quorum queue whose leader was lost just before a channel's first publish to
it refuses every publish of that channel until the lost node returns (RabbitMQ
3.10's queue client keeps asking the lost node): a channel that has only ever
been refused by a queue is replaced by a new one, at most once a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import pika
import pika.exceptions
from pika.channel import Channel
from pika.spec import Basic, BasicProperties

from common import amqp
from common.errors import (
    BrokerBlocked,
    BrokerUnavailable,
    MessageDecodeError,
    QueueFull,
    ResizeTimeout,
)
from common.messages import PurgeImage, ResizeJob, ResizeResult
from common.settings import Settings

log = logging.getLogger(__name__)

CHANNEL_RENEWAL_S = 1.0  # at most one new channel a second for a refusing queue
# A reply past its caller's timeout is still wanted this long after job_timeout_s
# (a processor answers a runaway resize about a second past it).
LATE_REPLY_GRACE_S = 5.0
_MAX_LATE = 10_000
LateReply = Callable[[ResizeResult], None]


class ResizeClient:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        # Called with each PurgeImage of the image.purge fanout (set by the frontend).
        self.on_purge: Callable[[PurgeImage], None] | None = None
        self._connection: amqp.AsyncConnection | None = None
        self._channel: Channel | None = None
        self._ready = False
        self._closing = False
        self.blocked_reason: str | None = None  # RabbitMQ's alarm, while it blocks us
        self._next_delivery_tag = 1
        self._confirms: dict[int, asyncio.Future[bool]] = {}
        self._destinations: dict[int, str] = {}  # each unconfirmed publish's queue or exchange
        self._accepted_by: set[str] = set()  # those that acked a publish of this channel
        self._renewing_channel = False
        self._channel_renewed_at = 0.0
        self._replies: dict[str, asyncio.Future[ResizeResult]] = {}
        # Calls that timed out: correlation id -> (until when, what to do with the reply).
        self._late: dict[str, tuple[float, LateReply]] = {}

    @property
    def ready(self) -> bool:
        return self._ready

    def start(self) -> None:
        self._closing = False
        self._connect()

    def close(self) -> None:
        self._closing = True
        if self._connection is not None and not (
            self._connection.is_closed or self._connection.is_closing
        ):
            self._connection.close()

    async def call(
        self, job: ResizeJob, timeout_s: float, on_late: LateReply | None = None
    ) -> ResizeResult:
        """Publish `job` and wait for its result, at most `timeout_s` in all; a
        result that comes later is given to `on_late` (on the loop)."""
        if not self._ready or self._channel is None:
            raise BrokerUnavailable()
        if self.blocked_reason is not None:
            raise BrokerBlocked()
        correlation_id = uuid.uuid4().hex
        reply: asyncio.Future[ResizeResult] = asyncio.get_running_loop().create_future()
        self._replies[correlation_id] = reply
        delivery_tag = None
        try:
            try:
                delivery_tag, confirmed = self._publish(
                    "",
                    amqp.RESIZE_QUEUE,
                    job.encode(),
                    amqp.persistent(correlation_id, amqp.DIRECT_REPLY_TO),
                )
            except pika.exceptions.AMQPError as exc:
                raise BrokerUnavailable() from exc
            try:
                async with asyncio.timeout(timeout_s):
                    if not await confirmed:
                        raise QueueFull()
                    return await reply
            except TimeoutError as exc:
                if on_late is not None:
                    self._await_late(correlation_id, on_late)
                raise ResizeTimeout() from exc
        finally:
            self._forget(delivery_tag)
            self._replies.pop(correlation_id, None)

    def _await_late(self, correlation_id: str, on_late: LateReply) -> None:
        now = time.monotonic()
        while self._late:  # oldest first: the expired ones go
            oldest, (until, _) = next(iter(self._late.items()))
            if until > now and len(self._late) < _MAX_LATE:
                break
            del self._late[oldest]
        until = now + self._settings.job_timeout_s + LATE_REPLY_GRACE_S
        self._late[correlation_id] = (until, on_late)

    async def publish_background(self, job: ResizeJob) -> bool:
        """Queue `job` on image.resize.background, nobody waiting for its result;
        False when it could not be queued (no broker, an alarm, the queue full)."""
        return await self._publish_confirmed("", amqp.BACKGROUND_QUEUE, job.encode())

    async def publish_purge(self, purge: PurgeImage) -> bool:
        """Fan `purge` out to every frontend and processor; False if RabbitMQ did not take it."""
        return await self._publish_confirmed(amqp.PURGE_EXCHANGE, "", purge.encode())

    async def _publish_confirmed(self, exchange: str, routing_key: str, body: bytes) -> bool:
        if not self._ready or self._channel is None or self.blocked_reason is not None:
            return False
        delivery_tag = None
        try:
            delivery_tag, confirmed = self._publish(exchange, routing_key, body, amqp.persistent())
            async with asyncio.timeout(self._settings.resize_deadline_s):
                return await confirmed
        except (pika.exceptions.AMQPError, BrokerUnavailable, TimeoutError):
            return False
        finally:
            self._forget(delivery_tag)

    def _publish(
        self, exchange: str, routing_key: str, body: bytes, properties: BasicProperties
    ) -> tuple[int, asyncio.Future[bool]]:
        """Publish on the channel; its delivery tag, and a future that is True
        once RabbitMQ acks the message, False if it nacks it."""
        assert self._channel is not None
        self._channel.basic_publish(exchange, routing_key, body, properties)
        delivery_tag = self._next_delivery_tag
        self._next_delivery_tag += 1
        confirmed: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._confirms[delivery_tag] = confirmed
        self._destinations[delivery_tag] = routing_key or exchange
        return delivery_tag, confirmed

    def _forget(self, delivery_tag: int | None) -> None:
        if delivery_tag is not None:
            self._confirms.pop(delivery_tag, None)
            self._destinations.pop(delivery_tag, None)

    # --- connection life cycle -------------------------------------------------

    def _connect(self) -> None:
        self._connection = amqp.AsyncConnection(
            amqp.next_node(self._settings),
            on_open_callback=self._on_connection_open,
            on_open_error_callback=self._on_connection_error,
            on_close_callback=self._on_connection_closed,
        )

    def _reconnect_later(self) -> None:
        self._ready = False
        if not self._closing:
            asyncio.get_running_loop().call_later(
                self._settings.amqp_reconnect_delay_s, self._connect
            )

    def _on_connection_open(self, connection: amqp.AsyncConnection) -> None:
        self.blocked_reason = None
        connection.add_on_connection_blocked_callback(self._on_blocked)
        connection.add_on_connection_unblocked_callback(self._on_unblocked)
        connection.channel(on_open_callback=self._on_channel_open)

    def _on_blocked(self, connection: amqp.AsyncConnection, frame: Any) -> None:
        self.blocked_reason = str(getattr(frame.method, "reason", "") or "resource alarm")
        log.warning("RabbitMQ blocks publishing (%s): misses get 503", self.blocked_reason)
        self._fail_pending(BrokerBlocked())

    def _on_unblocked(self, connection: amqp.AsyncConnection, frame: Any) -> None:
        log.warning("RabbitMQ unblocked publishing")
        self.blocked_reason = None

    def _on_connection_error(self, connection: amqp.AsyncConnection, error: BaseException) -> None:
        log.warning("cannot connect to RabbitMQ: %s", error)
        self._reconnect_later()

    def _on_connection_closed(
        self, connection: amqp.AsyncConnection, reason: BaseException
    ) -> None:
        if not self._closing:
            log.warning("RabbitMQ connection closed: %s", reason)
        self._fail_pending()
        self.blocked_reason = None
        self._reconnect_later()

    def _on_channel_open(self, channel: Channel) -> None:
        self._channel = channel
        self._next_delivery_tag = 1
        self._accepted_by = set()
        self._renewing_channel = False
        channel.add_on_close_callback(self._on_channel_closed)
        channel.confirm_delivery(ack_nack_callback=self._on_confirm)
        amqp.declare_then(channel, amqp.resize_queues(self._settings), self._on_queue_declared)

    def _on_queue_declared(self, frame: Any) -> None:
        assert self._channel is not None
        # Direct reply-to requires consuming (auto-ack) before the first publish.
        self._channel.basic_consume(
            amqp.DIRECT_REPLY_TO, self._on_reply, auto_ack=True, callback=self._on_consuming
        )

    # Then the purge fanout: the exchange, a queue of our own bound to it, its
    # consumer; only then are calls taken (a purge is published to that exchange).
    def _on_consuming(self, frame: Any) -> None:
        if self._channel is not None:
            self._channel.exchange_declare(
                amqp.PURGE_EXCHANGE, "fanout", durable=True, callback=self._on_purge_exchange
            )

    def _on_purge_exchange(self, frame: Any) -> None:
        if self._channel is not None:
            self._channel.queue_declare(
                "", exclusive=True, auto_delete=True, callback=self._on_purge_queue
            )

    def _on_purge_queue(self, frame: Any) -> None:
        if self._channel is not None:
            queue = frame.method.queue
            self._channel.queue_bind(queue, amqp.PURGE_EXCHANGE)
            self._channel.basic_consume(
                queue, self._on_purge_message, auto_ack=True, callback=self._on_ready
            )

    def _on_purge_message(
        self, channel: Channel, method: Basic.Deliver, properties: BasicProperties, body: bytes
    ) -> None:
        try:
            purge = PurgeImage.decode(body)
        except MessageDecodeError as exc:
            log.error("ignoring an undecodable purge: %s", exc.message)
            return
        if self.on_purge is not None:
            self.on_purge(purge)

    def _on_ready(self, frame: Any) -> None:
        self._ready = True
        log.info("connected to RabbitMQ")

    def _on_channel_closed(self, channel: Channel, reason: BaseException) -> None:
        self._ready = False
        self._channel = None
        self._fail_pending()
        if self._closing:
            return
        connection = self._connection
        if connection is None or not connection.is_open:
            return  # the connection's close callback reconnects
        if self._renewing_channel:
            self._renewing_channel = False
            connection.channel(on_open_callback=self._on_channel_open)
            return
        log.warning("RabbitMQ channel closed: %s", amqp.why_closed(reason))
        connection.close()  # the close callback reconnects

    def _renew_channel(self, refused_by: str) -> None:
        """Replace a channel that `refused_by` has never accepted a publish from."""
        if self._channel is None or not self._channel.is_open:
            return
        if time.monotonic() - self._channel_renewed_at < CHANNEL_RENEWAL_S:
            return
        self._channel_renewed_at = time.monotonic()
        log.warning("%s refuses every publish of this channel: opening another", refused_by)
        self._renewing_channel = True
        self._channel.close()

    def _fail_pending(self, error: BrokerUnavailable | None = None) -> None:
        pending: list[asyncio.Future[Any]] = [*self._confirms.values(), *self._replies.values()]
        for future in pending:
            if not future.done():
                future.set_exception(error or BrokerUnavailable("lost the connection to RabbitMQ"))
                # A call waiting on its confirm never awaits its reply future:
                # marked as seen, so asyncio does not log it as never retrieved.
                future.exception()
        self._confirms.clear()
        self._destinations.clear()
        self._replies.clear()

    # --- deliveries --------------------------------------------------------------

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        acked = isinstance(method, Basic.Ack)
        tags = (
            [tag for tag in self._confirms if tag <= method.delivery_tag]
            if method.multiple
            else [method.delivery_tag]
        )
        for tag in tags:
            future = self._confirms.pop(tag, None)
            destination = self._destinations.pop(tag, None)
            if future is not None and not future.done():
                future.set_result(acked)
            if destination is None:
                continue
            if acked:
                self._accepted_by.add(destination)
            elif destination not in self._accepted_by:
                self._renew_channel(destination)

    def _on_reply(
        self, channel: Channel, method: Basic.Deliver, properties: BasicProperties, body: bytes
    ) -> None:
        correlation_id = properties.correlation_id or ""
        future = self._replies.get(correlation_id)
        if future is None or future.done():  # the caller gave up (timeout) before it came
            late = self._late.pop(correlation_id, None)
            if late is not None:
                with contextlib.suppress(MessageDecodeError):
                    late[1](ResizeResult.decode(body))
            return
        try:
            future.set_result(ResizeResult.decode(body))
        except Exception as exc:  # MessageDecodeError: fail this call only
            future.set_exception(exc)
