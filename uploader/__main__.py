"""Uploader: persists resize results and originals to object storage, at a limited rate."""

from __future__ import annotations

import logging
import sys

from common import program
from common.errors import StorageRefused, StorageUnavailable
from common.storage import open_store
from uploader.consumer import Uploader

log = logging.getLogger("uploader")


def main(argv: list[str] | None = None) -> None:
    args = program.parse_args("Image server uploader", argv)
    settings = program.load_settings(args)
    program.configure_logging(settings, "uploader")
    store = open_store(settings)
    try:
        store.prepare()
    except StorageRefused as exc:
        sys.exit(f"object storage refuses us: {exc.message}")
    except StorageUnavailable as exc:
        # Not fatal: uploads wait in their queue and are retried until it is back.
        log.warning("object storage is not reachable yet: %s", exc.message)
    stop = program.stop_event_on_signals()
    Uploader(settings, store, stop).run()
    log.info("stopped")


if __name__ == "__main__":
    main()
