"""Processor: consumes ResizeJobs, resizes with libvips, replies."""

from __future__ import annotations

import logging

from common import metrics, program
from common.graphite import Graphite
from common.metrics import ProcessorFigures
from common.storage import open_store
from processor import imaging
from processor.worker import Processor

log = logging.getLogger("processor")


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    args, settings = program.start("processor", "Image server processor", argv, prog)
    metrics.enable(settings.metrics_dir)
    figures = ProcessorFigures(args.process_num)
    imaging.configure(threads=1)
    stop = program.stop_event_on_signals()
    Processor(settings, open_store(settings), Graphite(settings), figures, stop).run()
    log.info("stopped")


if __name__ == "__main__":
    main()
