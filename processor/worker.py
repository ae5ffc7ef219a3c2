"""The processor's consumer loop: one job at a time; queue uploads, reply, then ack."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel
from pika.spec import Basic, BasicProperties

from common import amqp, metrics
from common.config import Settings
from common.errors import ImageServerError, MessageDecodeError, SourceNotFound
from common.messages import ResizeJob, ResizeResult, UploadJob
from common.metrics import Metrics
from common.storage import ObjectStore, original_key, output_key
from common.urls import CONTENT_TYPES, Fit
from processor import imaging
from processor.fetch import SourceFetcher
from processor.masters import MasterStore
from processor.originals import OriginalStore

log = logging.getLogger(__name__)
_POLL_S = 0.5


@dataclasses.dataclass(frozen=True)
class Outcome:
    result: ResizeResult
    uploads: list[UploadJob]


class Processor:
    def __init__(
        self, settings: Settings, store: ObjectStore, metrics: Metrics, stop: threading.Event
    ) -> None:
        self._settings = settings
        self._stop = stop
        self._metrics = metrics
        shared = store if settings.storage_read_enabled else None
        self._originals = OriginalStore(settings, shared, SourceFetcher(settings))
        self._masters = MasterStore(settings) if settings.masters_enabled else None

    def run(self) -> None:
        """Consume until asked to stop; reconnect whenever RabbitMQ goes away."""
        amqp.consume_until_stopped(self._consume, self._stop, self._settings)

    def _consume(self) -> None:
        connection = pika.BlockingConnection(amqp.connection_parameters(self._settings))
        try:
            channel = connection.channel()
            amqp.declare_resize_queues(channel, self._settings)
            channel.basic_qos(prefetch_count=self._settings.processor_prefetch)
            # Uploads are confirmed; replies (on the consuming channel) need not be.
            upload_channel = connection.channel()
            amqp.declare_upload_queues(upload_channel, self._settings)
            upload_channel.confirm_delivery()
            log.info("consuming %s", amqp.RESIZE_QUEUE)
            for method, properties, body in channel.consume(
                amqp.RESIZE_QUEUE, inactivity_timeout=_POLL_S
            ):
                if method is not None:
                    self._on_message(channel, upload_channel, method, properties, body)
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
        upload_channel: BlockingChannel,
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
        outcome = self.process(job)
        # Uploads are queued (and confirmed) before the reply: once a client has
        # its image, the object store will get it too.
        for upload in outcome.uploads:
            upload_channel.basic_publish("", amqp.UPLOAD_QUEUE, upload.encode(), amqp.persistent())
        if properties.reply_to:
            channel.basic_publish(
                "",
                properties.reply_to,
                outcome.result.encode(),
                pika.BasicProperties(correlation_id=properties.correlation_id),
            )
        channel.basic_ack(method.delivery_tag)

    def _limits(self, job: ResizeJob) -> imaging.Limits:
        own_deadline = time.monotonic() + self._settings.job_timeout_s
        client_deadline = time.monotonic() + (job.deadline_epoch_s - time.time())
        return imaging.Limits(
            formats=frozenset(self._settings.allowed_source_formats),
            max_pixels=self._settings.max_source_pixels,
            deadline=min(own_deadline, client_deadline),
        )

    def _render(
        self, job: ResizeJob, rendition: imaging.Rendition, uploads: list[UploadJob]
    ) -> tuple[bytes, bool]:
        """The output, from the master when there is one; and whether the original was
        downloaded (then queued for upload)."""
        limits = self._limits(job)
        masters = self._masters if rendition.fit is not Fit.NONE else None
        if masters is not None and (master := masters.path(job.source_url)).exists():
            return imaging.render_master(master, rendition, limits), False
        original, downloaded = self._originals.get(job.source_url)
        if downloaded:
            self._metrics.event(metrics.ORIGINAL_DOWNLOADED)
            key = original_key(self._settings, job.source_url)
            uploads.append(UploadJob(key, "application/octet-stream", payload=original))
        made = masters.make(job.source_url, original, limits) if masters is not None else None
        if made is not None:
            return imaging.render_master(made, rendition, limits), downloaded
        return imaging.render(original, rendition, limits), downloaded

    def process(self, job: ResizeJob) -> Outcome:
        started = time.perf_counter()
        uploads: list[UploadJob] = []
        try:
            rendition = imaging.Rendition(
                Fit(job.fit), job.width, job.height, job.format, job.quality
            )
            data, downloaded = self._render(job, rendition, uploads)
        except ImageServerError as exc:
            log.info("job %s failed: %s %s", job.cache_key, type(exc).__name__, exc.message)
            if isinstance(exc, SourceNotFound):
                self._metrics.event(metrics.ORIGINAL_UNAVAILABLE)
            return Outcome(ResizeResult.failure(exc), uploads)
        except Exception as exc:  # a bug must cost one job, never the worker
            log.exception("job %s crashed", job.cache_key)
            error = ImageServerError(f"internal error ({type(exc).__name__})")
            return Outcome(ResizeResult.failure(error), uploads)
        log.info(
            "resized %s in %.1f ms (%d bytes%s)",
            job.cache_key,
            (time.perf_counter() - started) * 1000,
            len(data),
            ", original downloaded" if downloaded else "",
        )
        content_type = CONTENT_TYPES[job.format]
        uploads.append(
            UploadJob(output_key(self._settings, job.cache_key), content_type, payload=data)
        )
        self._metrics.event(metrics.IMAGE_REQUEST)
        self._metrics.event(f"{metrics.IMAGE_REQUEST}.{job.format}")
        return Outcome(ResizeResult.success(content_type, data), uploads)
