"""The figures of the status page and /status.json, computed from the sampled history.

The report is typed: /status.json is `dataclasses.asdict` of it, and the page
(ops/status/page.py) reads its fields. Metric and queue names come from their
declarations (common/metrics.py, common/amqp.py).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable
from typing import Any

from common import amqp, metrics
from common.files import Space
from common.settings import Settings
from ops.status.build_info import Build
from ops.status.host_figures import (
    CHART_WINDOW_S,
    LATENCY_WINDOW_S,
    RATE_WINDOW_S,
    HostFigures,
    Process,
    QueueFigures,
    Sample,
    quantile,
)

CHART_POINTS = 180
STATUS_CLASSES = ("2xx", "3xx", "4xx", "5xx")
Series = list[list[float | None]]  # [seconds ago, value] points


@dataclasses.dataclass(frozen=True)
class Percentiles:
    """Milliseconds, over a window; None when nothing was observed in it."""

    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None


@dataclasses.dataclass(frozen=True)
class Now:
    images_processing: int
    originals_downloading: int
    requests_in_progress: int
    uploads_in_progress: int


@dataclasses.dataclass(frozen=True)
class Requests:
    """Since the host started, but for the rate and the latency."""

    total: int
    per_s_last_minute: float
    cache_hits: int
    cache_misses: int
    hit_ratio: float | None
    from_store: int
    by_status_class: dict[str, int]
    latency_last_5_min: Percentiles


@dataclasses.dataclass(frozen=True)
class Resizes:
    done: int
    failed: int
    # How busy the processors' resize threads were over the last minute (0-1; None: none ran).
    busy_share_last_minute: float | None
    resize_time_last_5_min: Percentiles
    queue_wait_last_5_min: Percentiles
    originals_downloaded: int


@dataclasses.dataclass(frozen=True)
class Origin:
    """One source host's downloads by this host's processors, over the last 5 minutes."""

    host: str
    downloads: int
    failed: dict[str, int]  # by the error's name
    refused_busy: int  # too many downloads from it at once (SourceBusy), or paused (breaker)
    p95_ms: float | None


@dataclasses.dataclass(frozen=True)
class Uploads:
    stored: int
    retried: int
    dead_lettered: int
    queued: int | None  # in image.upload and this host's queue (None: neither declared yet)
    waiting_for_retry: int
    kept_on_disk: int
    dropped: int  # too large for RabbitMQ while spill_path was full


@dataclasses.dataclass(frozen=True)
class Errors:
    """What is failing now."""

    client_errors_per_min: float  # 4xx answers, over the last minute
    server_errors_per_min: float  # 5xx answers
    # By status: 502 an origin failed, 503 refused (busy, broker, disk), 504 timed out.
    server_errors_last_5_min: dict[str, int]
    jobs_failed_last_5_min: dict[str, int]  # by the error's name
    downloads_failed_last_5_min: dict[str, int]
    recent: list[
        dict[str, Any]
    ]  # the latest failed requests, newest first (ops/status/incidents.py)


@dataclasses.dataclass(frozen=True)
class ProcessRow(Process):
    uptime_s: int = 0


@dataclasses.dataclass(frozen=True)
class Charts:
    requests_per_s: Series
    p50_ms: Series
    p95_ms: Series
    p99_ms: Series


@dataclasses.dataclass(frozen=True)
class Report:
    sampled_epoch_s: float
    health: str  # "ok", or why the host cannot serve
    build: Build
    now: Now
    errors: Errors
    requests: Requests
    resizes: Resizes
    uploads: Uploads
    origins: list[Origin]  # the busiest first
    storage: dict[str, Any]  # the uploader's /health ({"uploader_answers": False}: none)
    queues: list[QueueFigures]
    queue_stats_problem: str | None  # why unacked messages and rates are missing
    disk: dict[str, Any] | None  # the janitor's figures, as it wrote them
    janitor_swept_s_ago: int | None  # None: no sweep yet (or no janitor)
    janitor_late: bool  # no sweep for three intervals (and 5 s): is it running?
    filesystems: list[Space]  # the host writes to
    processes: list[ProcessRow]
    charts: Charts

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def health(sample: Sample, now: float, settings: Settings) -> str | None:
    """Why this host cannot serve, or None when it can."""
    if now - sample.at > 5 * settings.status_interval_s + 5:
        return "the status server's sampler is stalled"
    if sample.broker_problem is not None:
        return sample.broker_problem
    for space in sample.filesystems:
        if space.free_share < settings.min_free_disk_share / 2:
            return (
                f"the disk of {space.path} is full: {space.free_share:.1%} free, below half "
                f"of min_free_disk_share ({settings.min_free_disk_share:.0%})"
            )
    frontends = [p for p in sample.processes if p.program == "frontend" and p.serving]
    if not frontends:
        return "no frontend process is serving"
    states = [sample.frontend_broker.get(p.num, (False, False)) for p in frontends]
    if any(blocked for _, blocked in states):
        return "RabbitMQ blocks publishing (its memory or disk alarm): misses get 503"
    if not any(connected for connected, _ in states):
        return "no frontend is connected to RabbitMQ"
    if not sample.queue(amqp.RESIZE_QUEUE).consumers:
        return f"no processor consumes {amqp.RESIZE_QUEUE}"
    return None


def _rate(old: Sample, new: Sample) -> float:
    """Requests per second between two samples."""
    elapsed = new.at - old.at
    if elapsed <= 0:
        return 0.0
    done = new.total(metrics.HTTP_REQUESTS) - old.total(metrics.HTTP_REQUESTS)
    return max(0.0, done) / elapsed


def _per_min(counter: str, label_value: str, old: Sample, new: Sample) -> float:
    elapsed = new.at - old.at
    if elapsed <= 0:
        return 0.0
    done = new.total(counter, label_value) - old.total(counter, label_value)
    return round(max(0.0, done) * 60 / elapsed, 1)


_NOT_FAILURES = ("ok", "already_stored")


def _server_errors(old: Sample, new: Sample) -> dict[str, int]:
    """5xx answers between two samples, by status code."""
    found = _grown(f"{metrics.HTTP_REQUESTS}_total:", _is_server_error, old, new)
    return dict(sorted(found.items()))


def _is_server_error(status: str) -> bool:
    return status.isdigit() and status.startswith("5")


def _failures(counter: str, old: Sample, new: Sample) -> dict[str, int]:
    """How many of `counter` ended in each failure between two samples."""
    found = _grown(f"{counter}_total:", lambda outcome: outcome not in _NOT_FAILURES, old, new)
    return dict(sorted(found.items(), key=lambda item: -item[1]))


def _grown(head: str, wanted: Callable[[str], bool], old: Sample, new: Sample) -> dict[str, int]:
    """How much each series `<head><label>` whose label is `wanted` grew between two samples."""
    found = {}
    for key, value in new.counters.items():
        label = key.removeprefix(head)
        if key.startswith(head) and wanted(label):
            count = int(value - old.counters.get(key, 0.0))
            if count > 0:
                found[label] = count
    return found


def busy_share(old: Sample, new: Sample) -> float | None:
    """The share of the time between two samples the processors' resize threads
    spent resizing (imgproxy's workers utilisation); None without a processor."""
    processors = sum(1 for p in new.processes if p.program == "processor" and p.serving)
    elapsed = new.at - old.at
    if not processors or elapsed <= 0:
        return None
    key = f"{metrics.RESIZE_SECONDS}_sum"
    busy_s = max(0.0, new.counters.get(key, 0.0) - old.counters.get(key, 0.0))
    return round(min(1.0, busy_s / elapsed / processors), 3)


def _percentiles(histogram: str, old: Sample, new: Sample) -> Percentiles:
    before, after = old.histograms.get(histogram, []), new.histograms.get(histogram, [])

    def ms(q: float) -> float | None:
        seconds = quantile(q, before, after)
        return None if seconds is None else round(seconds * 1000, 1)

    return Percentiles(ms(0.5), ms(0.95), ms(0.99))


_REFUSALS = ("SourceBusy", "SourceHostPaused")


def origins(old: Sample, new: Sample) -> list[Origin]:
    """Each source host downloaded from between two samples, the busiest first."""
    head = f"{metrics.DOWNLOADS}_total@"  # name@host, and name@host@outcome
    rows = []
    for source, downloads in _grown(head, lambda label: "@" not in label, old, new).items():
        outcomes = _grown(f"{head}{source}@", lambda outcome: outcome != "ok", old, new)
        histogram = f"{metrics.DOWNLOAD_SECONDS}@{source}"
        p95 = quantile(0.95, old.histograms.get(histogram, []), new.histograms.get(histogram, []))
        rows.append(
            Origin(
                host=source,
                downloads=downloads,
                failed={o: n for o, n in outcomes.items() if o not in _REFUSALS},
                refused_busy=sum(n for o, n in outcomes.items() if o in _REFUSALS),
                p95_ms=None if p95 is None else round(p95 * 1000, 1),
            )
        )
    return sorted(rows, key=lambda row: -row.downloads)


def report(host: HostFigures, settings: Settings) -> Report:
    latest = host.latest
    minute = host.sample_before(RATE_WINDOW_S)
    window = host.sample_before(LATENCY_WINDOW_S)
    hits = latest.total(metrics.CACHE_HITS)
    misses = latest.total(metrics.CACHE_MISSES)
    jobs = latest.total(metrics.JOBS)
    swept_s_ago = _swept_s_ago(latest)
    uploads_pending = sum(
        q.messages or 0 for q in latest.queues if amqp.is_upload_delay_queue(q.name)
    )
    return Report(
        sampled_epoch_s=round(latest.at, 3),
        health=health(latest, time.time(), settings) or "ok",
        build=host.build,
        now=Now(
            images_processing=int(latest.gauge(metrics.JOBS_IN_PROGRESS)),
            originals_downloading=int(latest.gauge(metrics.DOWNLOADS_IN_PROGRESS)),
            requests_in_progress=int(latest.gauge(metrics.HTTP_IN_PROGRESS)),
            uploads_in_progress=int(latest.gauge(metrics.UPLOADS_IN_PROGRESS)),
        ),
        errors=Errors(
            client_errors_per_min=_per_min(metrics.HTTP_REQUESTS, "4xx", minute, latest),
            server_errors_per_min=_per_min(metrics.HTTP_REQUESTS, "5xx", minute, latest),
            server_errors_last_5_min=_server_errors(window, latest),
            jobs_failed_last_5_min=_failures(metrics.JOBS, window, latest),
            downloads_failed_last_5_min=_failures(metrics.DOWNLOADS, window, latest),
            recent=latest.failures,
        ),
        requests=Requests(
            total=int(latest.total(metrics.HTTP_REQUESTS)),
            per_s_last_minute=round(_rate(minute, latest), 2),
            cache_hits=int(hits),
            cache_misses=int(misses),
            hit_ratio=round(hits / (hits + misses), 4) if hits + misses else None,
            from_store=int(latest.observations(metrics.HTTP_REQUEST_SECONDS, "store")),
            by_status_class={
                cls: int(latest.total(metrics.HTTP_REQUESTS, cls)) for cls in STATUS_CLASSES
            },
            latency_last_5_min=_percentiles(metrics.HTTP_REQUEST_SECONDS, window, latest),
        ),
        resizes=Resizes(
            done=int(latest.total(metrics.JOBS, "ok")),
            busy_share_last_minute=busy_share(minute, latest),
            failed=int(
                jobs
                - latest.total(metrics.JOBS, "ok")
                - latest.total(metrics.JOBS, "already_stored")
            ),
            resize_time_last_5_min=_percentiles(metrics.RESIZE_SECONDS, window, latest),
            queue_wait_last_5_min=_percentiles(metrics.QUEUE_WAIT_SECONDS, window, latest),
            originals_downloaded=int(latest.total(metrics.DOWNLOADS, "ok")),
        ),
        uploads=Uploads(
            stored=int(latest.total(metrics.UPLOADS, "stored")),
            retried=int(latest.total(metrics.UPLOADS, "retry")),
            dead_lettered=int(latest.total(metrics.UPLOADS, "dead_lettered")),
            queued=_sum_or_none(q.messages for q in latest.queues if amqp.is_upload_queue(q.name)),
            waiting_for_retry=uploads_pending,
            kept_on_disk=int(latest.gauge(metrics.SPILLED_UPLOADS)),
            dropped=int(latest.total(metrics.DROPPED_UPLOADS)),
        ),
        origins=origins(window, latest),
        storage=latest.storage,
        queues=latest.queues,
        queue_stats_problem=latest.queue_stats_problem,
        disk=latest.disk,
        janitor_swept_s_ago=swept_s_ago,
        janitor_late=swept_s_ago is None or swept_s_ago > 3 * settings.janitor_interval_s + 5,
        filesystems=latest.filesystems,
        processes=[
            ProcessRow(**dataclasses.asdict(p), uptime_s=round(latest.at - p.started_epoch_s))
            for p in latest.processes
        ],
        charts=charts(host.history),
    )


def _sum_or_none(counts: Iterable[int | None]) -> int | None:
    """The sum of what RabbitMQ told; None when it told nothing."""
    told = [count for count in counts if count is not None]
    return sum(told) if told else None


def _swept_s_ago(sample: Sample) -> int | None:
    """Seconds since the janitor's last sweep: a dead janitor's figures grow old."""
    swept = (sample.disk or {}).get("updated_epoch_s")
    return None if swept is None else round(sample.at - float(swept))


def charts(history: list[Sample]) -> Charts:
    """Requests/s and latency quantiles, each point over the CHART_WINDOW_S before it."""
    made = Charts([], [], [], [])
    if len(history) < 2:
        return made
    step = max(1, len(history) // CHART_POINTS)
    newest = history[-1].at
    start = 0
    for index in range(1, len(history), step):
        new = history[index]
        while history[start].at < new.at - CHART_WINDOW_S:
            start += 1
        old = history[min(start, index - 1)]
        ago = round(new.at - newest, 1)
        made.requests_per_s.append([ago, round(_rate(old, new), 2)])
        latency = _percentiles(metrics.HTTP_REQUEST_SECONDS, old, new)
        made.p50_ms.append([ago, latency.p50_ms])
        made.p95_ms.append([ago, latency.p95_ms])
        made.p99_ms.append([ago, latency.p99_ms])
    return made
