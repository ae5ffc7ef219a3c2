"""The figures of the status page and /status.json, computed from the sampled history."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from ops.host_figures import (
    CHART_WINDOW_S,
    LATENCY_WINDOW_S,
    RATE_WINDOW_S,
    HostFigures,
    Sample,
    quantile,
)

REQUESTS = "image_server_http_requests_total"
REQUEST_SECONDS = "image_server_http_request_duration_seconds"
RESIZE_SECONDS = "image_server_resize_duration_seconds"
QUEUE_WAIT_SECONDS = "image_server_queue_wait_seconds"
CHART_POINTS = 180


def health(sample: Sample, now: float, interval_s: float) -> str | None:
    """Why this host cannot serve, or None when it can."""
    if now - sample.at > 5 * interval_s + 5:
        return "the status server's sampler is stalled"
    if sample.broker_problem is not None:
        return sample.broker_problem
    frontends = [p for p in sample.processes if p.program == "frontend" and p.serving]
    if not frontends:
        return "no frontend process is serving"
    states = [sample.frontend_broker.get(p.num, (False, False)) for p in frontends]
    if any(blocked for _, blocked in states):
        return "RabbitMQ blocks publishing (its memory or disk alarm): misses get 503"
    if not any(connected for connected, _ in states):
        return "no frontend is connected to RabbitMQ"
    resize = next(q for q in sample.queues if q.name == "image.resize")
    if not resize.consumers:
        return "no processor consumes image.resize"
    return None


def _rate(name: str, old: Sample, new: Sample) -> float:
    elapsed = new.at - old.at
    if elapsed <= 0:
        return 0.0
    return max(0.0, new.counters.get(name, 0.0) - old.counters.get(name, 0.0)) / elapsed


def _quantiles(name: str, old: Sample, new: Sample, qs: tuple[float, ...]) -> dict[str, Any]:
    before, after = old.histograms.get(name, []), new.histograms.get(name, [])
    result: dict[str, Any] = {}
    for q in qs:
        seconds = quantile(q, before, after)
        result[f"p{round(q * 100)}_ms"] = None if seconds is None else round(seconds * 1000, 1)
    return result


def report(host: HostFigures, interval_s: float) -> dict[str, Any]:
    latest = host.latest
    minute = host.sample_before(RATE_WINDOW_S)
    window = host.sample_before(LATENCY_WINDOW_S)
    counters, gauges = latest.counters, latest.gauges
    hits = counters.get("image_server_cache_hits_total", 0.0)
    misses = counters.get("image_server_cache_misses_total", 0.0)
    uploads_pending = sum(
        q.messages or 0 for q in latest.queues if q.name.startswith("image.upload.delay")
    )
    upload_queue = next(q for q in latest.queues if q.name == "image.upload")
    return {
        "sampled_epoch_s": round(latest.at, 3),
        "health": health(latest, time.time(), interval_s) or "ok",
        "now": {
            "images_processing": int(gauges.get("image_server_jobs_in_progress", 0)),
            "originals_downloading": int(
                gauges.get("image_server_original_downloads_in_progress", 0)
            ),
            "requests_in_progress": int(gauges.get("image_server_http_requests_in_progress", 0)),
            "uploads_in_progress": int(gauges.get("image_server_uploads_in_progress", 0)),
        },
        "requests": {
            "total": int(counters.get(REQUESTS, 0)),
            "per_s_last_minute": round(_rate(REQUESTS, minute, latest), 2),
            "cache_hits": int(hits),
            "cache_misses": int(misses),
            "hit_ratio": round(hits / (hits + misses), 4) if hits + misses else None,
            "from_store": int(counters.get(f"{REQUEST_SECONDS}_count:store", 0)),
            "by_status_class": {
                cls: int(counters.get(f"{REQUESTS}:{cls}", 0))
                for cls in ("2xx", "3xx", "4xx", "5xx")
            },
            "latency_last_5_min": _quantiles(REQUEST_SECONDS, window, latest, (0.5, 0.95, 0.99)),
        },
        "resizes": {
            "done": int(counters.get("image_server_jobs_total:ok", 0)),
            "failed": int(
                counters.get("image_server_jobs_total", 0)
                - counters.get("image_server_jobs_total:ok", 0)
                - counters.get("image_server_jobs_total:already_stored", 0)
            ),
            "resize_time_last_5_min": _quantiles(RESIZE_SECONDS, window, latest, (0.5, 0.95)),
            "queue_wait_last_5_min": _quantiles(QUEUE_WAIT_SECONDS, window, latest, (0.5, 0.95)),
            "originals_downloaded": int(
                counters.get("image_server_original_downloads_total:ok", 0)
            ),
        },
        "uploads": {
            "stored": int(counters.get("image_server_uploads_total:stored", 0)),
            "retried": int(counters.get("image_server_uploads_total:retry", 0)),
            "dead_lettered": int(counters.get("image_server_uploads_total:dead_lettered", 0)),
            "queued": upload_queue.messages,
            "waiting_for_retry": uploads_pending,
            "kept_on_disk": int(gauges.get("image_server_spilled_uploads", 0)),
        },
        "queues": [dataclasses.asdict(q) for q in latest.queues],
        "disk": latest.disk,
        "processes": [
            {**dataclasses.asdict(p), "uptime_s": round(latest.at - p.started_epoch_s)}
            for p in latest.processes
        ],
        "charts": charts(host.history),
    }


def charts(history: list[Sample]) -> dict[str, list[list[float | None]]]:
    """[seconds ago, value] series: requests/s and latency quantiles, each point over
    the CHART_WINDOW_S before it."""
    if len(history) < 2:
        return {"requests_per_s": [], "p50_ms": [], "p95_ms": [], "p99_ms": []}
    step = max(1, len(history) // CHART_POINTS)
    newest = history[-1].at
    series: dict[str, list[list[float | None]]] = {
        "requests_per_s": [],
        "p50_ms": [],
        "p95_ms": [],
        "p99_ms": [],
    }
    start = 0
    for index in range(1, len(history), step):
        new = history[index]
        while history[start].at < new.at - CHART_WINDOW_S:
            start += 1
        old = history[min(start, index - 1)]
        ago = round(new.at - newest, 1)
        series["requests_per_s"].append([ago, round(_rate(REQUESTS, old, new), 2)])
        quantiles = _quantiles(REQUEST_SECONDS, old, new, (0.5, 0.95, 0.99))
        for key, value in quantiles.items():
            series[key].append([ago, value])
    return series
