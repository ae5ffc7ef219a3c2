"""The processor's consumer: jobs download concurrently, resize one at a time.

pika runs on the main thread only. Each delivered job (at most
processor_prefetch of them) runs on a job thread: it finds the original
(disk, object storage or the source: waiting on the network there, holding
no CPU), then hands its resize to the one resize thread, in arrival order.
The outcome goes back to pika's thread (`add_callback_threadsafe`), which
replies, queues the output's upload (confirmed), and only then acks. A
downloaded original is stored in object storage by its job thread after the
reply; only when that fails does it travel through RabbitMQ (an UploadJob).

What an output is made from, and the resize thread, are processor/render.py's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import threading
import time

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika.spec import Basic, BasicProperties

from common import amqp, graphite, purge
from common.consumer import Consumer, ConsumerRole, Delivery, Session
from common.errors import (
    DiskFull,
    ImageServerError,
    MessageDecodeError,
    SourceNotFound,
)
from common.file_index import FileIndex
from common.files import directory_identity, write_atomic
from common.formats import CONTENT_TYPES
from common.graphite import Graphite
from common.keys import ImageRef, OutputRef
from common.messages import PurgeImage, ResizeJob, ResizeResult, UploadJob
from common.metrics import ProcessorFigures
from common.settings import Settings
from common.spill import HeldUploads, Spill
from common.storage import ObjectStore
from processor.fetch import SourceFetcher
from processor.originals import OriginalStore
from processor.render import RUNAWAY_GRACE_S, Renderer, ResizeTime

log = logging.getLogger(__name__)
_BACKLOG_CHECK_S = 1.0
_BACKGROUND_LOOK_S = 1.0
_ORIGINAL_TYPE = "application/octet-stream"
_PURGE_MEMORY_S = 3600.0  # far past background_job_timeout_s
RUNAWAY_EXIT_CODE = 75  # EX_TEMPFAIL: supervisord restarts any code but 0


@dataclasses.dataclass(frozen=True)
class Outcome:
    result: ResizeResult | None  # None: nothing to do (background work already done)
    upload: UploadJob | None = None  # the output, for object storage
    downloaded_original: bytes | None = None  # to store once the client has its answer


class Processor(ConsumerRole[ResizeJob, Outcome]):
    queues = (amqp.RESIZE_QUEUE,)
    thread_name = "job"

    def __init__(
        self,
        settings: Settings,
        store: ObjectStore,
        graphite: Graphite,
        figures: ProcessorFigures,
        stop: threading.Event,
    ) -> None:
        self._settings = settings
        self._store = store
        self._stop = stop
        self._graphite = graphite
        self._figures = figures
        self.concurrency = settings.processor_prefetch
        shared = store if settings.storage_read_enabled else None
        self._fetcher = SourceFetcher(settings)
        self._originals = OriginalStore(settings, shared, self._fetcher, figures.downloads)
        self._renderer = Renderer(settings, self._originals, graphite, figures)
        self._spill = Spill(settings.spill_dir, settings.spill_max_bytes)
        self._held = HeldUploads(settings.spill_dir, settings.spill_max_bytes)
        self._outputs_index = FileIndex(settings.cache_dir)
        # Replies to a frontend whose cache has this identity name files in it.
        self._cache_identity = directory_identity(settings.cache_dir)
        self._backlog = (0, 0.0)  # image.upload's depth, and when it was asked (pika thread)
        # Per connection (set_up), touched by pika's thread only:
        self._upload_channel: BlockingChannel | None = None
        self._next_background_look = 0.0
        # When each image was last purged (by the fanout), for background outputs.
        self._purged_at: dict[ImageRef, float] = {}

    def run(self) -> None:
        """Consume until asked to stop; reconnect whenever RabbitMQ goes away."""
        try:
            Consumer(self._settings, self, self._figures.serving, self._stop).run()
        finally:
            self.close()

    def close(self) -> None:
        """The resize thread, the connections to sources and the journal of held uploads go."""
        self._renderer.close()
        self._fetcher.close()
        self._held.close()

    # --- the consumer's hooks (common/consumer.py), on pika's thread -------------

    def decode(self, body: bytes) -> ResizeJob:
        return ResizeJob.decode(body)

    def set_up(self, connection: BlockingConnection, channel: BlockingChannel) -> None:
        amqp.declare(channel, amqp.resize_queues(self._settings))
        channel.basic_qos(prefetch_count=self._settings.processor_prefetch)
        # Uploads are confirmed; replies (on the consuming channel) need not be.
        upload_channel = connection.channel()
        amqp.declare(upload_channel, amqp.upload_queues(self._settings, self._held.host))
        upload_channel.confirm_delivery()
        channel.basic_consume(amqp.bind_purge_queue(channel), self._on_purge, auto_ack=True)
        self._upload_channel, self._next_background_look = upload_channel, 0.0

    def between_polls(self, session: Session) -> None:
        # The consumer's own count (a job whose handler crashed leaves it too).
        self._figures.jobs_in_progress.set(session.in_hand)
        if self._renderer.runaway:
            self._restart(session.channel)
        if session.in_hand or time.monotonic() < self._next_background_look:
            return
        # One job of image.resize.background, taken only while no request's job
        # is in hand: a request waits at most for the one background job running.
        if not session.take(amqp.BACKGROUND_QUEUE):
            # A get on a quorum queue is a command in its log, even when
            # it finds nothing: an empty queue is asked once a second.
            self._next_background_look = time.monotonic() + _BACKGROUND_LOOK_S

    def _restart(self, channel: BlockingChannel) -> None:
        """The resize thread is held by work that cannot be stopped (its job is
        answered 504 and acked by now): exit, and supervisord starts this
        processor again. The jobs in hand go back to the queue with the
        connection."""
        log.error(
            "a resize ran %g s past its job's deadline in a codec that cannot be stopped: "
            "restarting this processor (its other jobs are redelivered)",
            RUNAWAY_GRACE_S,
        )
        with contextlib.suppress(pika.exceptions.AMQPError):
            channel.connection.close()
        logging.shutdown()
        os._exit(RUNAWAY_EXIT_CODE)

    def tear_down(self) -> None:
        self._upload_channel = None
        self._figures.jobs_in_progress.set(0)  # its jobs go back to the queue

    # --- pika's thread ---------------------------------------------------------

    def _on_purge(
        self,
        channel: BlockingChannel,
        method: Basic.Deliver,
        properties: BasicProperties,
        body: bytes,
    ) -> None:
        """An image purged (common/purge.py): its original and master here go too."""
        try:
            purged = PurgeImage.decode(body)
        except MessageDecodeError as exc:
            log.error("ignoring an undecodable purge: %s", exc.message)
            return
        now = time.time()
        # Kept as long as a background job that began before a purge may still end.
        self._purged_at = {
            image: at for image, at in self._purged_at.items() if now - at < _PURGE_MEMORY_S
        }
        self._purged_at[purged.image] = now
        purge.purge_host(self._settings, purged)

    def admit(self, job: ResizeJob, delivery: Delivery) -> bool:
        if job.queued_epoch_s:
            self._figures.queue_wait_seconds.observe(max(0.0, time.time() - job.queued_epoch_s))
        if time.time() > job.deadline_epoch_s:
            log.info("dropping %s: its deadline passed before it was started", job.cache_key)
            self._figures.jobs.labels(job.format, "expired").inc()
            return False
        return True

    def settle(self, job: ResizeJob, outcome: Outcome, delivery: Delivery) -> None:
        # The reply first: the client does not wait for the upload's confirm.
        # The job is acked only once its upload is queued (confirmed) or spilled:
        # a processor that dies between the two leaves the job to be redelivered,
        # made again and uploaded then.
        if delivery.properties.reply_to and outcome.result is not None:
            delivery.channel.basic_publish(
                "",
                delivery.properties.reply_to,
                outcome.result.encode(),
                pika.BasicProperties(correlation_id=delivery.properties.correlation_id),
            )
        if outcome.upload is not None:
            self._queue_upload(outcome.upload)

    def _queue_upload(self, upload: UploadJob) -> None:
        """Publish `upload` (confirmed): by reference to this host's upload queue
        (its file written already); with its bytes, when this host's disk could
        not hold them, to image.upload, unless it is larger than
        upload_inline_max_bytes or image.upload is full (then kept on disk
        without a message, for this host's uploader, when the disk allows)."""
        if upload.file:
            if self._upload_backlog() >= self._settings.upload_backlog_max:
                self._held.spill(upload, self._spill)
                log.info("upload queues at upload_backlog_max: %s kept on disk", upload.key)
                return
            try:
                self._uploads().basic_publish(
                    "", amqp.host_upload_queue(upload.host), upload.encode(), amqp.persistent()
                )
            except BaseException:
                self._never_queued(upload)
                raise
            self._held.published(upload)
            self._backlog = (self._backlog[0] + 1, self._backlog[1])
            return
        large = len(upload.payload) > self._settings.upload_inline_max_bytes
        if large or self._upload_backlog() >= self._settings.upload_backlog_max:
            why = "above upload_inline_max_bytes" if large else "image.upload at upload_backlog_max"
            try:
                self._spill.put(upload)
                log.info("%s: %s kept on disk", why, upload.key)
                return
            except DiskFull as exc:
                if large:  # RabbitMQ's memory is not for it: the next miss makes it again
                    log.error("%s not stored (%s): %s", upload.key, why, exc.message)
                    self._figures.dropped_uploads.inc()
                    return
                log.error("%s not kept on disk (%s): queued all the same", upload.key, exc.message)
        self._uploads().basic_publish("", amqp.UPLOAD_QUEUE, upload.encode(), amqp.persistent())
        self._backlog = (self._backlog[0] + 1, self._backlog[1])

    def _uploads(self) -> BlockingChannel:
        """This connection's channel of uploads (confirmed), on pika's thread."""
        assert self._upload_channel is not None, "used while connected only"
        return self._upload_channel

    def _upload_backlog(self) -> int:
        """Messages in image.upload and this host's upload queue, asked of RabbitMQ
        at most once a second."""
        count, asked_at = self._backlog
        if time.monotonic() - asked_at > _BACKLOG_CHECK_S:
            queues = (amqp.UPLOAD_QUEUE, amqp.host_upload_queue(self._held.host))
            count = sum(
                int(self._uploads().queue_declare(q, passive=True).method.message_count)
                for q in queues
            )
            asked_at = time.monotonic()
        self._backlog = (count, asked_at)
        return count

    # --- job threads -------------------------------------------------------------

    def handle(self, job: ResizeJob, delivery: Delivery) -> Outcome:
        return self.made(job, background=delivery.properties.reply_to is None)

    def made(self, job: ResizeJob, background: bool) -> Outcome:
        """`job` done: its reply, and its output held for its upload (a background
        job's kept in this host's cache too); nothing when a background job's
        output is stored already."""
        if background and not job.replace and self._already_stored(job):
            self._figures.jobs.labels(job.format, "already_stored").inc()
            return Outcome(None)  # background work another job (or host) has done
        outcome = self.process(job, background)
        if background and outcome.upload is not None:
            self._keep_here(job, outcome.upload)
        elif not background:
            outcome = self._reply_with_file(job, outcome)
        if outcome.upload is not None:
            outcome = dataclasses.replace(outcome, upload=self._by_reference(outcome.upload))
        return outcome

    def afterwards(
        self, job: ResizeJob, outcome: Outcome, delivery: Delivery, settling: bool
    ) -> None:
        if not settling:
            self._never_queued(outcome.upload)
            return  # the connection is gone: RabbitMQ redelivers the job
        if outcome.downloaded_original is not None and outcome.upload is not None:
            self._store_original(job, outcome.downloaded_original, outcome.upload, delivery)

    def _by_reference(self, upload: UploadJob) -> UploadJob:
        """`upload` held in a file of this host, durably, and the message that names
        it (bytes cross RabbitMQ only to leave the host); `upload` itself, bytes
        and all, when this host's disk cannot hold it."""
        try:
            return self._held.hold(upload)
        except (OSError, DiskFull) as exc:
            log.warning("could not hold the upload of %s on disk (%s): bytes", upload.key, exc)
            return upload

    def _never_queued(self, upload: UploadJob | None) -> None:
        """No message will name the held file of `upload` (the connection went
        first): it goes (the job is redelivered and made again)."""
        if upload is not None and upload.file:
            self._held.release(upload)

    def _reply_with_file(self, job: ResizeJob, outcome: Outcome) -> Outcome:
        """A frontend whose cache is this host's gets the output as a file of it,
        not in the reply (bytes cross RabbitMQ only to leave the host); another
        host's frontend, or a write that fails, gets the bytes."""
        result = outcome.result
        if result is None or result.error_name:
            return outcome
        same_cache = job.reply_cache == self._cache_identity
        if not (same_cache and self._kept(job.output, result.payload)):
            self._figures.replies.labels("bytes").inc()
            return outcome
        self._figures.replies.labels("file").inc()
        return dataclasses.replace(outcome, result=result.written_to_cache())

    def _keep_here(self, job: ResizeJob, upload: UploadJob) -> None:
        """A background output goes into this host's disk cache at once: the requests
        it was made for find it while its upload waits its turn (not when its image
        was purged since its job began)."""
        image = dataclasses.replace(job.output.image, source_tag=None)  # purged with all sources
        if self._purged_at.get(image, 0.0) < upload.made_epoch_s:
            self._kept(job.output, upload.payload)

    def _kept(self, output: OutputRef, data: bytes) -> bool:
        """Whether `data` is now this host's cached `output` (written whole, then
        renamed, then indexed for the janitor)."""
        path = output.cache_path(self._settings)
        try:
            stat = write_atomic(path, data)
        except (OSError, DiskFull) as exc:  # the reply or the upload still carries it
            log.warning("could not keep %s in this host's cache: %s", output.cache_key, exc)
            return False
        self._outputs_index.added(path, stat.st_size)
        return True

    def _already_stored(self, job: ResizeJob) -> bool:
        try:
            return self._store.exists(job.output.object_key(self._settings))
        except ImageServerError:
            return False  # storage down: make it, the uploader retries

    def _store_original(
        self, job: ResizeJob, data: bytes, output: UploadJob, delivery: Delivery
    ) -> None:
        """Put a new original in object storage, off the resize thread; when
        storage fails, hand it to the uploader (which retries) instead. Like the
        output it was downloaded for, a purge of its image since undoes it."""
        key = job.output.image.original_key(self._settings, job.source_url)
        upload = dataclasses.replace(
            output,
            key=key,
            content_type=_ORIGINAL_TYPE,
            payload=data,
            request_id="",
            file="",
            host="",
        )
        try:
            purge.put_unless_purged(
                self._settings,
                self._store,
                (key, data, _ORIGINAL_TYPE),
                job.output.image,
                upload.made_epoch_s,
                same_as=self._originals.path(job.source_url),
            )
            return
        except ImageServerError as exc:
            log.warning("storing original %s failed (%s): queued for the uploader", key, exc)
        held = self._by_reference(upload)
        if not delivery.on_pika_thread(functools.partial(self._queue_upload, held)):
            self._never_queued(held)

    def process(self, job: ResizeJob, background: bool = False) -> Outcome:
        """Make `job`'s output (a background job has background_job_timeout_s)."""
        spent = ResizeTime()
        started, began_epoch_s = time.perf_counter(), time.time()
        try:
            rendered = self._renderer.render(job, background, spent)
        except ImageServerError as exc:
            if isinstance(exc, SourceNotFound):
                self._graphite.event(graphite.ORIGINAL_UNAVAILABLE)
            self._job_done(job, started, type(exc).__name__, 0, exc.message)
            return Outcome(ResizeResult.failure(exc, spent.seconds))
        except Exception as exc:  # a bug must cost one job, never the worker
            log.exception("job %s crashed", job.cache_key)
            error = ImageServerError(f"internal error ({type(exc).__name__})")
            self._job_done(job, started, "InternalError", 0, error.message)
            return Outcome(ResizeResult.failure(error))
        data = rendered.output
        self._job_done(job, started, "ok", len(data), rendered.how)
        self._figures.output_bytes.labels(job.format).observe(len(data))
        content_type = CONTENT_TYPES[job.format]
        key = job.output.object_key(self._settings)
        upload = UploadJob(
            key,
            content_type,
            payload=data,
            request_id=job.request_id,
            made_for=job.cache_key,
            made_epoch_s=began_epoch_s,
        )
        self._graphite.event(graphite.IMAGE_REQUEST)
        self._graphite.event(f"{graphite.IMAGE_REQUEST}.{job.format}")
        result = ResizeResult.success(content_type, data, spent.seconds)
        return Outcome(result, upload, rendered.downloaded_original)

    def _job_done(
        self, job: ResizeJob, started: float, outcome: str, size: int, detail: str
    ) -> None:
        """Count the job and write its log line (docs/metrics-and-logs.md, Logs)."""
        duration_s = time.perf_counter() - started
        self._figures.job_seconds.observe(duration_s)
        self._figures.jobs.labels(job.format, outcome).inc()
        fields = {
            "event": "job",
            "cache_key": job.cache_key,
            "request_id": job.request_id,
            "source": job.source_url,
            "duration_ms": round(duration_s * 1000, 2),
            "bytes": size,
            "outcome": outcome,
            "detail": detail,
        }
        verb = "resized" if outcome == "ok" else "failed"
        log.info(
            "%s %s in %.1f ms (%s)",
            verb,
            job.cache_key,
            duration_s * 1000,
            detail,
            extra={"fields": fields},
        )
