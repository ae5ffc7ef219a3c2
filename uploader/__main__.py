"""Uploader: persists resize results and originals to object storage, at a limited rate."""

from __future__ import annotations

import logging
import sys

from common import program
from common.errors import StorageRefused, StorageUnavailable
from common.storage import open_store
from uploader.consumer import Uploader
from uploader.health import Health, serve

log = logging.getLogger("uploader")


def main(argv: list[str] | None = None) -> None:
    args = program.parse_args("Image server uploader", argv)
    settings = program.load_settings(args)
    program.configure_logging(settings, "uploader")
    store = open_store(settings)
    health = Health()
    server = serve(health, settings.bind_address, settings.uploader_health_port)
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
    Uploader(settings, store, stop, health).run()
    server.shutdown()
    log.info("stopped")


if __name__ == "__main__":
    main()
