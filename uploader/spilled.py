"""Stores the uploads that this host's processors kept on disk (see common/spill.py).

On a thread of its own, beside the consumer of image.upload and under the same
rate limit: oldest first, each file removed once its object is stored; when
storage fails, the file stays and the next try waits upload_retry_delays_s[0].
Once a minute it also tidies the held uploads (`tidy_held`).
"""

from __future__ import annotations

import logging
import threading
import time

from common import purge
from common.errors import ImageServerError
from common.metrics import UploaderFigures
from common.settings import Settings
from common.spill import HeldUploads, Spill
from common.storage import ObjectStore
from uploader.health import Health
from uploader.ratelimit import RateLimiter

log = logging.getLogger(__name__)
_IDLE_S = 1.0
_BATCH = 64
_TIDY_EVERY_S = 60.0


def tidy_held(held: HeldUploads, spill: Spill, expiry_s: float) -> None:
    """Held uploads no message will name go: those a killed processor left
    before it published (their jobs were made again), and those held longer
    than their host's queue lives unused (upload_host_queue_expiry_s: this
    host was away that long, its queue and their messages are gone), which
    move to the spill, to be stored from there."""
    removed = held.reclaim_unpublished()
    if removed:
        log.warning(
            "removed %d held upload(s) that no message names: a processor was stopped between "
            "writing and publishing them (their jobs were made again)",
            removed,
        )
    moved = held.spill_older_than(time.time() - expiry_s, spill, _BATCH)
    if moved:
        log.warning(
            "%d upload(s) held longer than upload_host_queue_expiry_s (their queue is gone): "
            "stored from the spill instead",
            moved,
        )


def drain(
    settings: Settings,
    store: ObjectStore,
    limiter: RateLimiter,
    health: Health,
    figures: UploaderFigures,
    stop: threading.Event,
) -> None:
    spill = Spill(settings.spill_dir, settings.spill_max_bytes)
    held = HeldUploads(settings.spill_dir, settings.spill_max_bytes)
    added = spill.rebuild_if_needed()
    if added:
        log.info("indexed %d uploads kept on disk before the index existed", added)
    tidy_at = 0.0
    while not stop.is_set():
        if time.monotonic() >= tidy_at:
            try:
                tidy_held(held, spill, settings.upload_host_queue_expiry_s)
            except Exception:  # housekeeping: it must never stop the spill's drain
                log.exception("tidying the held uploads failed; tried again in a minute")
            tidy_at = time.monotonic() + _TIDY_EVERY_S
        health.spilled_uploads = spill.count()
        figures.spilled.set(health.spilled_uploads)
        paths = spill.oldest(_BATCH)
        if not paths:
            stop.wait(_IDLE_S)
            continue
        for path in paths:
            upload = spill.read(path)
            if upload is None:
                continue
            if stop.wait(limiter.reserve()):
                return
            try:
                with figures.storing():
                    kept = purge.store_upload(settings, store, upload)
            except ImageServerError as exc:
                log.warning("stored-on-disk upload %s failed (%s): kept", upload.key, exc.message)
                stop.wait(settings.upload_retry_delays_s[0])
                break
            spill.stored(path)
            figures.uploads.labels("stored" if kept else "purged").inc()
            if kept:
                log.info("stored %s (%d bytes, from disk)", upload.key, len(upload.payload))
