"""Prometheus figures of every program of a host (prometheus-client's multiprocess mode).

Each process writes its counters, gauges and histograms to memory-mapped files
in `metrics_path`, one set per pid; the status server (ops/status/)
adds them up for `/metrics`, `/status.json` and its page. Why this mode: a
figure is written where it happens (a frontend counts its requests, a
processor its resizes) at the cost of a few memory writes, nothing crosses
a socket on the request path, and the files of a process outlive it, so a
restarted process takes nothing with it: counters of dead pids still count.
The live gauges (in progress, serving, start time) of a pid that is gone are
removed by the status server (`forget_dead_processes`). `make run` empties
the directory when the host starts: a counter reset, as Prometheus expects
of a restart.

Every figure is declared here, once; docs/metrics-and-logs.md lists them.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import Counter, Gauge, Histogram, multiprocess, values
from prometheus_client.samples import Sample

from common.errors import SourceForbidden

# Every metric's name, declared once: the figures below and the status server use these.
PROCESS_START_TIME = "image_server_process_start_time_seconds"
PROCESS_SERVING = "image_server_process_serving"
HTTP_REQUESTS = "image_server_http_requests"
HTTP_REQUEST_SECONDS = "image_server_http_request_duration_seconds"
HTTP_IN_PROGRESS = "image_server_http_requests_in_progress"
CACHE_HITS = "image_server_cache_hits"
CACHE_MISSES = "image_server_cache_misses"
BROKER_CONNECTED = "image_server_broker_connected"
BROKER_BLOCKED = "image_server_broker_blocked"
JOBS = "image_server_jobs"
JOBS_IN_PROGRESS = "image_server_jobs_in_progress"
JOB_SECONDS = "image_server_job_duration_seconds"
RESIZE_SECONDS = "image_server_resize_duration_seconds"
QUEUE_WAIT_SECONDS = "image_server_queue_wait_seconds"
DOWNLOADS = "image_server_original_downloads"
DOWNLOADS_IN_PROGRESS = "image_server_original_downloads_in_progress"
DOWNLOAD_SECONDS = "image_server_original_download_duration_seconds"
DOWNLOAD_BYTES = "image_server_original_download_bytes"
REFUSED_HOST = "(refused)"  # the host label of downloads refused as forbidden
UPLOADS = "image_server_uploads"
UPLOADS_IN_PROGRESS = "image_server_uploads_in_progress"
UPLOAD_SECONDS = "image_server_upload_duration_seconds"
SPILLED_UPLOADS = "image_server_spilled_uploads"
DROPPED_UPLOADS = "image_server_dropped_uploads"
REPLIES = "image_server_replies"
OUTPUT_BYTES = "image_server_output_bytes"
ORIGINAL_BYTES = "image_server_original_bytes"
# Sizes of outputs and originals: from a thumbnail (a few KB) to max_source_bytes.
BYTES_BUCKETS = tuple(float(4**power * 1024) for power in range(0, 10))  # 1 KiB to 256 MiB

# Request and job latencies: from a cache hit (about a millisecond) to a cold
# resize of a big original (seconds), up to resize_deadline_s.
SECONDS_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
_LIVE_FILE = re.compile(r"gauge_live\w+?_(\d+)\.db$")


def enable(metrics_dir: Path) -> None:
    """Make every figure created after this call a file in `metrics_dir`.

    prometheus-client chooses where values live when its module is imported
    (from PROMETHEUS_MULTIPROC_DIR); our programs learn the directory from
    their config later, so they set both the variable and the value class.
    """
    metrics_dir.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    values.ValueClass = values.MultiProcessValue()
    # A pid the kernel reused: the live gauges of the process that had it are stale.
    multiprocess.mark_process_dead(os.getpid(), str(metrics_dir))


def forget_dead_processes(metrics_dir: Path) -> None:
    """Remove the live gauges of processes that are gone (killed, restarted)."""
    for path in glob.glob(str(metrics_dir / "gauge_live*.db")):
        match = _LIVE_FILE.search(path)
        if match is not None and not _alive(int(match.group(1))):
            multiprocess.mark_process_dead(int(match.group(1)), str(metrics_dir))


_HEADER_BYTES = 8  # a metrics file's used-bytes counter and padding, written when it is sized


def _samples(metrics_dir: Path) -> list[Sample]:
    """Every sample of the host's files, summed over processes as the status server does."""
    if not metrics_dir.is_dir():
        return []  # no program has started yet
    # A process that is starting has created its files but maybe not sized them
    # yet: an empty file is left for the next look (prometheus-client would fail
    # on it), and so is one removed meanwhile (a dead process's gauges).
    files = []
    for path in metrics_dir.glob("*.db"):
        try:
            if path.stat().st_size >= _HEADER_BYTES:
                files.append(str(path))
        except FileNotFoundError:
            continue
    families = multiprocess.MultiProcessCollector.merge(files, accumulate=True)
    return [sample for family in families for sample in family.samples]


def serving_pids(metrics_dir: Path) -> set[int]:
    """Pids whose PROCESS_SERVING gauge is 1."""
    return {
        int(sample.labels["pid"])
        for sample in _samples(metrics_dir)
        if sample.name == PROCESS_SERVING and sample.value == 1
    }


def counter_total(metrics_dir: Path, name: str) -> float:
    """A counter of the host, summed over its labels."""
    return sum(sample.value for sample in _samples(metrics_dir) if sample.name == name)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _seconds(name: str, meaning: str, labels: tuple[str, ...] = ()) -> Histogram:
    return Histogram(name, meaning, labels, buckets=SECONDS_BUCKETS, registry=None)


class ProcessFigures:
    """What every program reports: that it runs, since when, and whether it serves."""

    def __init__(self, program: str, process_num: int) -> None:
        labels = ("program", "num")
        self.start_time = Gauge(
            PROCESS_START_TIME,
            "When this process started (Unix time); one series per live process.",
            labels,
            multiprocess_mode="liveall",
            registry=None,
        ).labels(program, str(process_num))
        self.serving = Gauge(
            PROCESS_SERVING,
            "1 while the process takes work (listening, consuming), 0 while it starts or drains.",
            labels,
            multiprocess_mode="liveall",
            registry=None,
        ).labels(program, str(process_num))
        self.start_time.set(time.time())
        self.serving.set(0)


class FrontendFigures(ProcessFigures):
    def __init__(self, process_num: int) -> None:
        super().__init__("frontend", process_num)
        self.requests = Counter(
            HTTP_REQUESTS,
            "Image requests answered, by HTTP status and output format (none: unparsable).",
            ("status", "format"),
            registry=None,
        )
        self.request_seconds = _seconds(
            HTTP_REQUEST_SECONDS,
            "Time to answer an image request, by where its output came from: hit (local "
            "cache), store (object storage), miss (resized for it), coalesced (waited on "
            "another request's resize), none (refused before the cache was asked).",
            ("cache",),
        )
        self.in_progress = Gauge(
            HTTP_IN_PROGRESS,
            "Image requests being answered now.",
            multiprocess_mode="livesum",
            registry=None,
        )
        self.cache_hits = Counter(
            CACHE_HITS, "Requests answered from the local disk cache.", registry=None
        )
        self.cache_misses = Counter(
            CACHE_MISSES,
            "Requests whose output was not in the local cache (from storage, resized, coalesced).",
            registry=None,
        )
        self.broker_connected = Gauge(
            BROKER_CONNECTED,
            "1 while this frontend can publish resize jobs to RabbitMQ.",
            ("num",),
            multiprocess_mode="liveall",
            registry=None,
        ).labels(str(process_num))
        self.broker_blocked = Gauge(
            BROKER_BLOCKED,
            "1 while RabbitMQ blocks this frontend's publishes (its memory or disk alarm).",
            ("num",),
            multiprocess_mode="liveall",
            registry=None,
        ).labels(str(process_num))


class ProcessorFigures(ProcessFigures):
    def __init__(self, process_num: int) -> None:
        super().__init__("processor", process_num)
        self.jobs = Counter(
            JOBS,
            "Resize jobs done, by output format and outcome (ok, the error's name, or "
            "already_stored: a background job whose output object storage had).",
            ("format", "outcome"),
            registry=None,
        )
        self.jobs_in_progress = Gauge(
            JOBS_IN_PROGRESS,
            "Resize jobs taken from image.resize and not yet answered.",
            multiprocess_mode="livesum",
            registry=None,
        )
        self.job_seconds = _seconds(
            JOB_SECONDS,
            "Time of a whole job: finding the original (downloading it if need be) and resizing.",
        )
        self.resize_seconds = _seconds(
            RESIZE_SECONDS,
            "Time libvips spends on a job: decode, resize, encode (waits excluded).",
            ("format",),
        )
        self.queue_wait_seconds = _seconds(
            QUEUE_WAIT_SECONDS,
            "Time from a frontend's publish to a processor taking the job.",
        )
        self.output_bytes = Histogram(
            OUTPUT_BYTES,
            "Size of each output made, by format.",
            ("format",),
            buckets=BYTES_BUCKETS,
            registry=None,
        )
        self.dropped_uploads = Counter(
            DROPPED_UPLOADS,
            "Outputs answered but not stored: larger than upload_inline_max_bytes, and "
            "spill_path full (its disk, or spill_max_bytes); the next miss makes them again.",
            registry=None,
        )
        self.replies = Counter(
            REPLIES,
            "Outputs answered to a frontend, by what carried them: file (written to the "
            "asking frontend's cache, on this host) or bytes (in the reply).",
            ("carried",),
            registry=None,
        )
        self.downloads = DownloadFigures()


class DownloadFigures:
    """Originals fetched from their source (processors)."""

    def __init__(self) -> None:
        self.in_progress = Gauge(
            DOWNLOADS_IN_PROGRESS,
            "Originals being downloaded now.",
            multiprocess_mode="livesum",
            registry=None,
        )
        # By source host: the origins' health (a refused host is not a label of its own).
        self.done = Counter(
            DOWNLOADS,
            "Original downloads, by source host and outcome (ok, or the error's name).",
            ("host", "outcome"),
            registry=None,
        )
        self.seconds = _seconds(DOWNLOAD_SECONDS, "Time to download an original.", ("host",))
        self.bytes = Counter(DOWNLOAD_BYTES, "Bytes of originals downloaded.", registry=None)
        self.sizes = Histogram(
            ORIGINAL_BYTES,
            "Size of each original downloaded.",
            buckets=BYTES_BUCKETS,
            registry=None,
        )

    @contextlib.contextmanager
    def measure(self, host: str) -> Iterator[None]:
        """Count a download from `host`; one refused as forbidden counts under
        REFUSED_HOST (anyone may name any host in a source URL)."""
        self.in_progress.inc()
        started = time.perf_counter()
        outcome = "ok"
        try:
            yield
        except Exception as exc:
            outcome = type(exc).__name__
            if isinstance(exc, SourceForbidden):
                host = REFUSED_HOST
            raise
        finally:
            self.in_progress.dec()
            self.seconds.labels(host).observe(time.perf_counter() - started)
            self.done.labels(host, outcome).inc()


class UploaderFigures(ProcessFigures):
    def __init__(self) -> None:
        super().__init__("uploader", 0)
        self.uploads = Counter(
            UPLOADS,
            "Upload attempts to object storage, by outcome: stored, retry (queued for a later "
            "attempt), dead_lettered (given up) or purged (deleted again: its image was purged "
            "after its job began).",
            ("outcome",),
            registry=None,
        )
        self.uploads_in_progress = Gauge(
            UPLOADS_IN_PROGRESS,
            "Uploads being stored now.",
            multiprocess_mode="livesum",
            registry=None,
        )
        self.upload_seconds = _seconds(UPLOAD_SECONDS, "Time to store one object.")
        self.spilled = Gauge(
            SPILLED_UPLOADS,
            "Uploads this host's processors kept on disk (image.upload was full).",
            multiprocess_mode="livemax",
            registry=None,
        )

    @contextlib.contextmanager
    def storing(self) -> Iterator[None]:
        self.uploads_in_progress.inc()
        started = time.perf_counter()
        try:
            yield
        finally:
            self.uploads_in_progress.dec()
            self.upload_seconds.observe(time.perf_counter() - started)
