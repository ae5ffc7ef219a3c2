"""The uploader's consumer: persists UploadJobs at a bounded rate and concurrency.

It consumes image.upload (uploads that carry their bytes) and this host's
queue of uploads by reference (amqp.host_upload_queue: each names a file of
this host's held uploads, common/spill.py). Each message's life (decode, a
thread of the pool, settle and ack on pika's thread) is common/consumer.py's;
this role stores the object and settles. A message is acked only once its object is
stored (then its file goes), or once it has been moved (confirmed) to a
delay queue for a retry (by reference still: its host's own) or to the
dead-letter queue (with its bytes: the file goes, and a replay may run
anywhere). A message whose file is gone (its host's disk was replaced) is
counted `lost` and acked: the object is made again by the next miss.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time

from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from common import amqp, keys, purge
from common.consumer import Consumer, ConsumerRole, Delivery, Session
from common.errors import ImageServerError
from common.messages import UploadJob
from common.metrics import UploaderFigures
from common.settings import Settings
from common.spill import HeldUploads
from common.storage import ObjectStore
from uploader.health import Health
from uploader.ratelimit import RateLimiter

log = logging.getLogger(__name__)
_COUNT_EVERY_S = 1.0
_DECLARE_EVERY_S = 3600.0


@dataclasses.dataclass(frozen=True)
class _Outcome:
    failure: ImageServerError | None
    kept: bool  # False: stored, then deleted again (its image was purged since)
    counted: bool  # False: storage did not answer at all, the attempt is not spent
    # The upload with its bytes; still by reference when its file could not be read
    # (it stays for a retry); None when its file is gone.
    loaded: UploadJob | None


class Uploader(ConsumerRole[UploadJob, _Outcome]):
    thread_name = "upload"

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
        self._held = HeldUploads(settings.spill_dir, settings.spill_max_bytes)
        self.queues = (amqp.UPLOAD_QUEUE, amqp.host_upload_queue(self._held.host))
        self.concurrency = settings.upload_concurrency
        self._counted_at = 0.0  # when the queues were last counted (pika's thread)
        self._declare_every_s = min(settings.upload_host_queue_expiry_s / 4, _DECLARE_EVERY_S)
        self._declare_again_at = time.monotonic() + self._declare_every_s

    def run(self) -> None:
        """Consume until asked to stop; reconnect whenever RabbitMQ goes away."""
        added = self._held.rebuild_if_needed()  # its bound counts files an old index lost
        if added:
            log.info("indexed %d uploads held by reference before the index existed", added)
        Consumer(self._settings, self, self._figures.serving, self._stop).run()

    # --- the consumer's hooks (common/consumer.py), on pika's thread -------------

    def decode(self, body: bytes) -> UploadJob:
        return UploadJob.decode(body)

    def set_up(self, connection: BlockingConnection, channel: BlockingChannel) -> None:
        self._health.broker_connected = True
        amqp.declare(channel, amqp.upload_queues(self._settings, self._held.host))
        channel.confirm_delivery()
        channel.basic_qos(prefetch_count=self._settings.upload_concurrency)
        self._counted_at = 0.0

    def between_polls(self, session: Session) -> None:
        if time.monotonic() >= self._declare_again_at:
            # A delay queue has no consumer: declared again, it is used, so it does
            # not expire while this host lives (upload_host_queue_expiry_s).
            amqp.declare(session.channel, amqp.upload_queues(self._settings, self._held.host))
            self._declare_again_at = time.monotonic() + self._declare_every_s
        if time.monotonic() - self._counted_at >= _COUNT_EVERY_S:  # for /health
            self._health.queued_uploads = sum(
                int(session.channel.queue_declare(queue, passive=True).method.message_count)
                for queue in self.queues
            )
            self._counted_at = time.monotonic()

    def tear_down(self) -> None:
        self._health.broker_connected = False

    def handle(self, job: UploadJob, delivery: Delivery) -> _Outcome:
        """On a pool thread, at upload_rate_per_s: store the object."""
        time.sleep(self._limiter.reserve())
        failure: ImageServerError | None = None
        kept, counted = True, True
        known_down = self._health.storage_down()  # before: it may come back meanwhile
        loaded: UploadJob | None = job  # by reference until its file is read
        try:
            loaded = self._held.load(job) if job.file else job
            if loaded is not None:
                with self._figures.storing():
                    kept = purge.store_upload(self._settings, self._store, loaded)
                self._health.storage_ok()
        except ImageServerError as exc:
            failure = exc
            # An attempt made while storage was down is not spent, nor one that
            # failed because it just went down (it takes no write at all now).
            if exc.retryable and (known_down or not self._storage_takes_writes()):
                self._health.storage_failed(exc.message)
                counted = False
        except Exception as exc:  # a bug costs one upload attempt, never the uploader
            log.exception("upload of %s crashed", job.key)
            failure = ImageServerError(f"internal error ({type(exc).__name__})")
        return _Outcome(failure, kept, counted, loaded)

    def _storage_takes_writes(self) -> bool:
        """Whether object storage stores anything now (a failed put may be the object's own)."""
        try:
            self._store.put(keys.probe_key(self._settings), b"", "text/plain")
        except ImageServerError:
            return False
        return True

    def settle(self, job: UploadJob, outcome: _Outcome, delivery: Delivery) -> None:
        loaded, done_with = outcome.loaded, True  # done with it: its file, if any, goes
        if loaded is None:
            self._figures.uploads.labels("lost").inc()
            log.error("upload of %s lost: its file %s is gone from this host", job.key, job.file)
        elif outcome.failure is not None:
            done_with = not self._retried(
                delivery.channel, job, loaded, outcome.failure, outcome.counted
            )
        elif not outcome.kept:
            self._figures.uploads.labels("purged").inc()
        else:
            self._figures.uploads.labels("stored").inc()
            fields = {"event": "upload", "key": job.key, "request_id": job.request_id}
            size = len(loaded.payload)
            log.info("stored %s (%d bytes)", job.key, size, extra={"fields": fields})
        unread = loaded is not None and bool(loaded.file)  # its file stays for another try
        if job.file and done_with and not unread:
            self._held.release(job)

    def _retried(
        self,
        channel: BlockingChannel,
        job: UploadJob,
        loaded: UploadJob,
        failure: ImageServerError,
        counted: bool,
    ) -> bool:
        """Retry after the next delay (by reference still, for an upload by
        reference), or dead-letter once the attempts are spent (an attempt made
        while storage did not answer at all is not one of them), with its bytes;
        whether it was retried."""
        delays = self._settings.upload_retry_delays_s
        retried = failure.retryable and (job.attempt < len(delays) or not counted)
        if retried:
            delay_s = delays[min(job.attempt, len(delays) - 1)]
            target = amqp.upload_delay_queue(delay_s, job.host)
            self._figures.uploads.labels("retry").inc()
            log.warning(
                "upload of %s failed (%s); retry %d in %.1f s%s",
                job.key,
                failure.message,
                job.attempt + 1,
                delay_s,
                "" if counted else " (storage is down: this attempt is not counted)",
            )
        else:
            target = amqp.UPLOAD_DEAD_QUEUE
            job = loaded  # with its bytes (its file goes after this), if they could be read
            self._figures.uploads.labels("dead_lettered").inc()
            log.error(
                "upload of %s failed for good after %d attempts (%s); dead-lettered",
                job.key,
                job.attempt + 1,
                failure.message,
            )
        retry = dataclasses.replace(job, attempt=job.attempt + (1 if counted else 0))
        # Confirmed publish: only then is the original message acked.
        channel.basic_publish("", target, retry.encode(), amqp.persistent())
        return retried
