"""Processor: consumes ResizeJobs, resizes with libvips, replies."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

from common import program
from processor import imaging
from processor.worker import Processor

log = logging.getLogger("processor")


def install_stop_handlers(stop: threading.Event) -> None:
    """SIGTERM/SIGINT: finish the job in hand, ack it, then exit."""

    def request_stop(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: stopping after the current job", signum)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)


def main(argv: list[str] | None = None) -> None:
    args = program.parse_args("Image server processor", argv)
    settings = program.load_settings(args)
    program.configure_logging(settings, "processor")
    imaging.configure(threads=1)
    stop = threading.Event()
    install_stop_handlers(stop)
    Processor(settings, stop).run()
    log.info("stopped")


if __name__ == "__main__":
    main()
