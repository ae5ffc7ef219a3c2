"""The uploader's consumer: persists UploadJobs at a bounded rate and concurrency.

pika runs on the main thread only; uploads run on a thread pool and hand
their outcome back with `add_callback_threadsafe`. A message is acked only
once its object is stored, or once it has been moved (confirmed) to a delay
queue for a retry or to the dead-letter queue.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import logging
import threading
import time

from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika.spec import Basic, BasicProperties

from common import amqp, purge
from common.config import Settings
from common.consumer import Consumer, OnMessage
from common.errors import ImageServerError, MessageDecodeError
from common.messages import UploadJob
from common.metrics import UploaderFigures
from common.storage import ObjectStore
from uploader.health import Health
from uploader.ratelimit import RateLimiter

log = logging.getLogger(__name__)
_COUNT_EVERY_S = 1.0


class Uploader:
    queue = amqp.UPLOAD_QUEUE  # what the consumer skeleton consumes (common/consumer.py)

    def __init__(
        self,
        settings: Settings,
        store: ObjectStore,
        stop: threading.Event,
        health: Health,
        limiter: RateLimiter,
        figures: UploaderFigures,
    ) -> None:
        self._settings = settings
        self._health = health
        self._figures = figures
        self._store = store
        self._stop = stop
        self._limiter = limiter
        # Per connection (set_up), touched by pika's thread only:
        self._in_progress = 0
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._counted_at = 0.0

    def run(self) -> None:
        """Consume until asked to stop; reconnect whenever RabbitMQ goes away."""
        Consumer(self._settings, self, self._figures.serving, self._stop).run()

    # --- the consumer's hooks (common/consumer.py), on pika's thread -------------

    def set_up(self, connection: BlockingConnection, channel: BlockingChannel) -> OnMessage:
        self._health.broker_connected = True
        self._in_progress = 0
        pool = concurrent.futures.ThreadPoolExecutor(self._settings.upload_concurrency)
        self._pool = pool
        amqp.declare(channel, amqp.upload_queues(self._settings))
        channel.confirm_delivery()
        channel.basic_qos(prefetch_count=self._settings.upload_concurrency)
        self._counted_at = 0.0
        return functools.partial(self._on_message, connection, pool)

    def between_polls(self, channel: BlockingChannel) -> None:
        if time.monotonic() - self._counted_at >= _COUNT_EVERY_S:  # for /health
            declared = channel.queue_declare(amqp.UPLOAD_QUEUE, passive=True)
            self._health.queued_uploads = int(declared.method.message_count)
            self._counted_at = time.monotonic()

    def in_hand(self) -> int:
        return self._in_progress

    def tear_down(self) -> None:
        self._health.broker_connected = False
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = None

    def _on_message(
        self,
        connection: BlockingConnection,
        pool: concurrent.futures.ThreadPoolExecutor,
        channel: BlockingChannel,
        method: Basic.Deliver,
        properties: BasicProperties,
        body: bytes,
    ) -> None:
        try:
            job = UploadJob.decode(body)
        except MessageDecodeError as exc:
            log.error("dead-lettering an undecodable upload: %s", exc.message)
            channel.basic_reject(method.delivery_tag, requeue=False)
            return
        self._in_progress += 1
        start = functools.partial(pool.submit, self._upload, connection, channel, method, job)
        connection.call_later(self._limiter.reserve(), start)

    def _upload(
        self,
        connection: BlockingConnection,
        channel: BlockingChannel,
        method: Basic.Deliver,
        job: UploadJob,
    ) -> None:
        """On a pool thread: store the object, then hand the outcome to pika's thread."""
        failure: ImageServerError | None = None
        kept = True
        try:
            with self._figures.storing():
                kept = self._put(job)
            self._health.storage_ok()
        except ImageServerError as exc:
            failure = exc
            if exc.retryable:
                self._health.storage_failed(exc.message)
        except Exception as exc:  # a bug costs one upload attempt, never the uploader
            log.exception("upload of %s crashed", job.key)
            failure = ImageServerError(f"internal error ({type(exc).__name__})")
        finish = functools.partial(self._finish, channel, method, job, failure, kept)
        connection.add_callback_threadsafe(finish)

    def _put(self, job: UploadJob) -> bool:
        """Store `job`'s object; False when a purge of its image came after its job began."""
        put = (job.key, job.payload, job.content_type)
        if not job.made_for:
            self._store.put(*put)
            return True
        return purge.put_unless_purged(
            self._settings, self._store, put, job.made_for, job.made_epoch_s
        )

    def _finish(
        self,
        channel: BlockingChannel,
        method: Basic.Deliver,
        job: UploadJob,
        failure: ImageServerError | None,
        kept: bool,
    ) -> None:
        self._in_progress -= 1
        if failure is None and not kept:
            self._figures.uploads.labels("purged").inc()
        elif failure is None:
            self._figures.uploads.labels("stored").inc()
            fields = {"event": "upload", "key": job.key, "request_id": job.request_id}
            log.info("stored %s (%d bytes)", job.key, len(job.payload), extra={"fields": fields})
        else:
            self._retry_or_give_up(channel, job, failure)
        channel.basic_ack(method.delivery_tag)

    def _retry_or_give_up(
        self, channel: BlockingChannel, job: UploadJob, failure: ImageServerError
    ) -> None:
        delays = self._settings.upload_retry_delays_s
        if failure.retryable and job.attempt < len(delays):
            delay_s = delays[job.attempt]
            target = amqp.upload_delay_queue(delay_s)
            self._figures.uploads.labels("retry").inc()
            log.warning(
                "upload of %s failed (%s); retry %d in %.1f s",
                job.key,
                failure.message,
                job.attempt + 1,
                delay_s,
            )
        else:
            target = amqp.UPLOAD_DEAD_QUEUE
            self._figures.uploads.labels("dead_lettered").inc()
            log.error(
                "upload of %s failed for good after %d attempts (%s); dead-lettered",
                job.key,
                job.attempt + 1,
                failure.message,
            )
        retry = dataclasses.replace(job, attempt=job.attempt + 1)
        # Confirmed publish: only then is the original message acked.
        channel.basic_publish("", target, retry.encode(), amqp.persistent())
