"""The processor's consumer loop: one job at a time, reply, then ack."""

from __future__ import annotations

import logging
import threading
import time

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel
from pika.spec import Basic, BasicProperties

from common import amqp
from common.config import Settings
from common.errors import ImageServerError, MessageDecodeError
from common.messages import ResizeJob, ResizeResult
from common.urls import CONTENT_TYPES, Fit
from processor import imaging
from processor.originals import OriginalStore

log = logging.getLogger(__name__)
_POLL_S = 0.5


class Processor:
    def __init__(self, settings: Settings, stop: threading.Event) -> None:
        self._settings = settings
        self._stop = stop
        self._originals = OriginalStore(settings)

    def run(self) -> None:
        """Consume until asked to stop; reconnect whenever RabbitMQ goes away."""
        while not self._stop.is_set():
            try:
                self._consume()
            except pika.exceptions.AMQPError as exc:
                log.warning("RabbitMQ connection lost (%s); reconnecting", type(exc).__name__)
                self._stop.wait(self._settings.amqp_reconnect_delay_s)

    def _consume(self) -> None:
        connection = pika.BlockingConnection(amqp.connection_parameters(self._settings))
        try:
            channel = connection.channel()
            amqp.declare_resize_queues(channel, self._settings)
            channel.basic_qos(prefetch_count=self._settings.processor_prefetch)
            log.info("consuming %s", amqp.RESIZE_QUEUE)
            for method, properties, body in channel.consume(
                amqp.RESIZE_QUEUE, inactivity_timeout=_POLL_S
            ):
                if method is not None:
                    self._on_message(channel, method, properties, body)
                if self._stop.is_set():
                    break
            # Hands back prefetched jobs that were not started.
            channel.cancel()
        finally:
            if connection.is_open:
                connection.close()

    def _on_message(
        self,
        channel: BlockingChannel,
        method: Basic.Deliver,
        properties: BasicProperties,
        body: bytes,
    ) -> None:
        try:
            job = ResizeJob.decode(body)
        except MessageDecodeError as exc:
            log.error("dead-lettering an undecodable job: %s", exc.message)
            channel.basic_reject(method.delivery_tag, requeue=False)
            return
        if time.time() > job.deadline_epoch_s:
            log.info("dropping %s: its deadline passed before it was started", job.cache_key)
            channel.basic_ack(method.delivery_tag)
            return
        result = self.process(job)
        if properties.reply_to:
            channel.basic_publish(
                "",
                properties.reply_to,
                result.encode(),
                pika.BasicProperties(correlation_id=properties.correlation_id),
            )
        channel.basic_ack(method.delivery_tag)

    def process(self, job: ResizeJob) -> ResizeResult:
        started = time.perf_counter()
        try:
            original, downloaded = self._originals.get(job.source_url)
            rendition = imaging.Rendition(
                Fit(job.fit), job.width, job.height, job.format, job.quality
            )
            data = imaging.render(original, rendition)
        except ImageServerError as exc:
            log.info("job %s failed: %s %s", job.cache_key, type(exc).__name__, exc.message)
            return ResizeResult.failure(exc)
        except Exception as exc:  # a bug must cost one job, never the worker
            log.exception("job %s crashed", job.cache_key)
            return ResizeResult.failure(ImageServerError(f"internal error ({type(exc).__name__})"))
        log.info(
            "resized %s in %.1f ms (%d bytes%s)",
            job.cache_key,
            (time.perf_counter() - started) * 1000,
            len(data),
            ", original downloaded" if downloaded else "",
        )
        return ResizeResult.success(CONTENT_TYPES[job.format], data)
