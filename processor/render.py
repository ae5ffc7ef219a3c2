"""What a job's output is made from, and the one resize thread that makes it.

The plan (`plan`), when masters are on (full_size is always made from the
original, which it keeps whole):
- the image's master is made: the output is made from it;
- the original was just downloaded (the first size asked of a new image):
  straight from the original, with shrink-on-load: a master may never be
  needed; unless another job asked for the same image while this one waited
  for the resize thread: then the master first, from the one decode both
  sizes need, and the output from it;
- the original was already here (a second size): the master first.
An output that needs more pixels than the master has (a tall crop, a
portrait's largest widths) is made from the original whatever the plan.

Every libvips call runs on the one resize thread, in arrival order; waiting
(for a download, for another job making the same master) happens on the
job's own thread, so the resize thread never sits idle behind a lock.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import enum
import logging
import time
from collections.abc import Callable
from typing import TypeVar

from common import graphite
from common.errors import DiskFull, OutputTooLarge, RenderTooSlow, ResizeTimeout
from common.graphite import Graphite
from common.messages import ResizeJob
from common.metrics import ProcessorFigures
from common.settings import Settings, output_pixel_limit
from common.urls import Fit
from processor import imaging
from processor.masters import MasterStore
from processor.originals import Original, OriginalStore

T = TypeVar("T")
log = logging.getLogger(__name__)
# Past a job's deadline, libvips stops by itself (imaging.decode.abandon_after); work
# still running this long after it is in a codec that cannot be stopped.
RUNAWAY_GRACE_S = 1.0
_RUNAWAY_POLL_S = 0.1


class Plan(enum.Enum):
    FROM_MASTER = "from its master"
    FROM_ORIGINAL = "straight from the original"
    MASTER_FIRST = "master made first"


def plan(master_made: bool, original_new: bool, asked_again: bool) -> Plan:
    """What an output is made from, masters on (this module's docstring says why)."""
    if master_made:
        return Plan.FROM_MASTER
    if original_new and not asked_again:
        return Plan.FROM_ORIGINAL
    return Plan.MASTER_FIRST


@dataclasses.dataclass(frozen=True)
class Rendered:
    output: bytes
    downloaded_original: bytes | None  # the original's bytes, when downloaded for this job
    how: str  # for the job's log line: the original's state and the plan taken


@dataclasses.dataclass
class ResizeTime:
    """Seconds one job spent on the resize thread (its ResizeResult says, for budgets)."""

    seconds: float = 0.0


class Renderer:
    def __init__(
        self,
        settings: Settings,
        originals: OriginalStore,
        graphite_client: Graphite,
        figures: ProcessorFigures,
    ) -> None:
        self._settings = settings
        self._originals = originals
        self._graphite = graphite_client
        self._figures = figures
        self._masters = MasterStore(settings) if settings.masters_enabled else None
        self._encoding = encoding(settings)
        # libvips gets one core's worth of work per processor: resizes queue here.
        self._resizer = concurrent.futures.ThreadPoolExecutor(1, "resize")
        self.runaway = False  # the resize thread is held by work past its deadline

    def close(self) -> None:
        self._resizer.shutdown(wait=False, cancel_futures=True)

    def render(self, job: ResizeJob, background: bool, spent: ResizeTime) -> Rendered:
        """`job`'s output, on the job's thread; its libvips work adds to `spent`."""
        rendition = self._rendition(job)
        limits = self._limits(job, background)
        resize = self._on_resize_thread(job.format, spent, limits.deadline)
        masters = self._masters if rendition.fit is not Fit.NONE else None
        master = masters.existing(job.source_url) if masters is not None else None
        if master is not None:
            output = resize(lambda: imaging.render_master(master, rendition, limits))
            if output is not None:  # else too small for this output, or evicted since the look
                return Rendered(output, None, Plan.FROM_MASTER.value)
        image = job.output.image
        shared_key = image.original_key(self._settings, job.source_url)
        explicit = image.source_tag is not None
        opened = self._originals.open(job.source_url, shared_key, limits.deadline, explicit)
        with opened as original:
            if original.downloaded:
                self._graphite.event(graphite.ORIGINAL_DOWNLOADED)
            if masters is None:
                output = resize(lambda: imaging.render(original.data, rendition, limits))
                how = Plan.FROM_ORIGINAL.value
            else:
                # Held on this thread while the resize thread works: another job
                # of this image waits here for the master rather than make it too.
                with masters.locked(job.source_url, limits.deadline):
                    make = self._planned(masters, job.source_url, original, rendition, limits)
                    output, how = resize(make)
            self._check_size(output)
        state = "original downloaded" if original.downloaded else "original cached"
        return Rendered(output, original.data if original.downloaded else None, f"{state}, {how}")

    def _planned(
        self,
        masters: MasterStore,
        source_url: str,
        original: Original,
        rendition: imaging.Rendition,
        limits: imaging.Limits,
    ) -> Callable[[], tuple[bytes, str]]:
        """The plan's work for the resize thread, decided there: a job that asks
        for this image while this one waits for the thread is still counted."""

        def make() -> tuple[bytes, str]:
            asked_again = original.downloaded and self._originals.asked_again(source_url)
            taken = plan(masters.made(source_url), original.downloaded, asked_again)
            if taken is Plan.MASTER_FIRST:
                try:
                    masters.make(source_url, original.data, limits)  # none if small already
                except DiskFull as exc:  # no master, then: this output from the original
                    log.error("master not made: %s", exc.message)
            if taken is not Plan.FROM_ORIGINAL:
                # None without a master, or when this output needs more pixels.
                output = imaging.render_master(masters.path(source_url), rendition, limits)
                if output is not None:
                    return output, taken.value
            return imaging.render(original.data, rendition, limits), Plan.FROM_ORIGINAL.value

        return make

    def _check_size(self, output: bytes) -> None:
        if len(output) > self._settings.max_output_bytes:
            raise OutputTooLarge(
                f"the output is {len(output)} bytes, above max_output_bytes "
                f"({self._settings.max_output_bytes})"
            )

    def _on_resize_thread(
        self, output_format: str, spent: ResizeTime, deadline: float
    ) -> Callable[[Callable[[], T]], T]:
        """A function that runs work on the resize thread (in arrival order),
        waits for it, and counts its time. Work still running RUNAWAY_GRACE_S
        past `deadline` (time.monotonic()) is a runaway: a codec that does not
        honour the deadline. It is not waited for: RenderTooSlow is raised and
        `runaway` set (the processor then restarts, processor/worker.py)."""
        seconds = self._figures.resize_seconds.labels(output_format)

        def run(work: Callable[[], T]) -> T:
            started: list[float] = []

            def timed() -> T:
                started.append(time.perf_counter())
                try:
                    return work()
                finally:
                    took_s = time.perf_counter() - started[0]
                    seconds.observe(took_s)
                    spent.seconds += took_s

            future = self._resizer.submit(timed)
            wait_s = max(0.0, deadline - time.monotonic()) + RUNAWAY_GRACE_S
            while True:
                try:
                    return future.result(timeout=wait_s)
                except concurrent.futures.TimeoutError:
                    pass
                if future.cancel():  # still waiting its turn behind a runaway
                    raise ResizeTimeout("the job's deadline passed while it waited to be resized")
                # Work that began after its deadline stops at once (imaging checks first).
                if started and time.perf_counter() - started[0] > RUNAWAY_GRACE_S:
                    spent.seconds += time.perf_counter() - started[0]
                    self.runaway = True
                    raise RenderTooSlow(
                        "the resize ran past job_timeout_s in a codec that cannot be stopped"
                    )
                wait_s = _RUNAWAY_POLL_S

        return run

    def _rendition(self, job: ResizeJob) -> imaging.Rendition:
        return imaging.Rendition(
            job.fit,
            job.width,
            job.height,
            job.format,
            job.quality,
            self._encoding,
            self._settings.enlarge_width,
            job.quality_target,
            job.gravity,
            job.background,
        )

    def _limits(self, job: ResizeJob, background: bool) -> imaging.Limits:
        settings = self._settings
        timeout_s = settings.background_job_timeout_s if background else settings.job_timeout_s
        own_deadline = time.monotonic() + timeout_s
        client_deadline = time.monotonic() + (job.deadline_epoch_s - time.time())
        return imaging.Limits(
            formats=frozenset(settings.allowed_source_formats),
            max_pixels=settings.max_source_pixels,
            deadline=min(own_deadline, client_deadline),
            max_frames=settings.max_animation_frames,
            max_output_pixels=output_pixel_limit(settings, job.format),
            max_jpeg_scans=settings.max_source_jpeg_scans,
        )


def encoding(settings: Settings) -> imaging.Encoding:
    """The encoder settings of `settings` (a format missing from encoder_effort keeps
    imaging's default)."""
    effort, default = settings.encoder_effort, imaging.Encoding()
    return imaging.Encoding(
        jpeg_progressive=settings.jpeg_progressive,
        jpeg_trellis=settings.jpeg_trellis,
        webp_effort=effort.get("webp", default.webp_effort),
        avif_effort=effort.get("avif", default.avif_effort),
        png_compression=effort.get("png", default.png_compression),
        png_palette=settings.png_palette,
        webp_lossless_sources=settings.webp_lossless_sources,
    )
