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

from common import amqp
from common.config import Settings
from common.errors import ImageServerError, MessageDecodeError
from common.messages import UploadJob
from common.metrics import UploaderFigures
from common.storage import ObjectStore
from uploader.health import Health
from uploader.ratelimit import RateLimiter

log = logging.getLogger(__name__)
_POLL_S = 0.2
_COUNT_EVERY_S = 1.0


class Uploader:
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
        self._in_progress = 0

    def run(self) -> None:
        """Consume until asked to stop; reconnect whenever RabbitMQ goes away."""
        amqp.consume_until_stopped(self._consume, self._stop, self._settings)

    def _consume(self) -> None:
        self._health.broker_connected = False
        connection = amqp.blocking_connection(self._settings)
        self._health.broker_connected = True
        self._in_progress = 0
        pool = concurrent.futures.ThreadPoolExecutor(self._settings.upload_concurrency)
        try:
            channel = connection.channel()
            amqp.declare_upload_queues(channel, self._settings)
            channel.confirm_delivery()
            channel.basic_qos(prefetch_count=self._settings.upload_concurrency)
            on_message = functools.partial(self._on_message, connection, pool)
            consumer_tag = channel.basic_consume(amqp.UPLOAD_QUEUE, on_message)
            log.info("consuming %s", amqp.UPLOAD_QUEUE)
            self._figures.serving.set(1)
            counted_at = 0.0
            while not self._stop.is_set():
                connection.process_data_events(time_limit=_POLL_S)
                if time.monotonic() - counted_at >= _COUNT_EVERY_S:  # for /health
                    declared = channel.queue_declare(amqp.UPLOAD_QUEUE, passive=True)
                    self._health.queued_uploads = int(declared.method.message_count)
                    counted_at = time.monotonic()
            self._figures.serving.set(0)
            channel.basic_cancel(consumer_tag)
            # Graceful stop: let started uploads finish and be acked.
            give_up = time.monotonic() + 30
            while self._in_progress and time.monotonic() < give_up:
                connection.process_data_events(time_limit=_POLL_S)
        finally:
            self._figures.serving.set(0)
            self._health.broker_connected = False
            pool.shutdown(wait=False, cancel_futures=True)
            if connection.is_open:
                connection.close()

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
        try:
            with self._figures.storing():
                self._store.put(job.key, job.payload, job.content_type)
            self._health.storage_ok()
        except ImageServerError as exc:
            failure = exc
            if exc.retryable:
                self._health.storage_failed(exc.message)
        except Exception as exc:  # a bug costs one upload attempt, never the uploader
            log.exception("upload of %s crashed", job.key)
            failure = ImageServerError(f"internal error ({type(exc).__name__})")
        finish = functools.partial(self._finish, channel, method, job, failure)
        connection.add_callback_threadsafe(finish)

    def _finish(
        self,
        channel: BlockingChannel,
        method: Basic.Deliver,
        job: UploadJob,
        failure: ImageServerError | None,
    ) -> None:
        self._in_progress -= 1
        if failure is None:
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
