"""Uploader: persists resize results and originals to object storage, at a limited rate."""

from __future__ import annotations

import logging
import sys
import threading

from common import metrics, program
from common.errors import StorageRefused, StorageUnavailable
from common.metrics import UploaderFigures
from common.storage import open_store
from uploader import spilled
from uploader.consumer import Uploader
from uploader.health import Health, serve
from uploader.ratelimit import RateLimiter

log = logging.getLogger("uploader")


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    _, settings = program.start("uploader", "Image server uploader", argv, prog)
    metrics.enable(settings.metrics_dir)
    figures = UploaderFigures()
    store = open_store(settings)
    health = Health()
    server = serve(health, settings.status_bind_address, settings.uploader_health_port)
    try:
        store.prepare()
        health.storage_ok()
    except StorageRefused as exc:
        sys.exit(f"object storage refuses us: {exc.message}")
    except StorageUnavailable as exc:
        # Not fatal: uploads wait in their queue and are retried until it is back.
        log.error("object storage is not reachable: %s (uploads wait in RabbitMQ)", exc.message)
        health.storage_failed(exc.message)
    stop = program.stop_event_on_signals()
    limiter = RateLimiter(settings.upload_rate_per_s)
    health.rate_per_s = settings.upload_rate_per_s
    drain = threading.Thread(
        target=spilled.drain, args=(settings, store, limiter, health, figures, stop), name="spilled"
    )
    drain.start()
    Uploader(settings, store, stop, health, limiter, figures).run()
    drain.join()
    server.shutdown()
    log.info("stopped")


if __name__ == "__main__":
    main()
