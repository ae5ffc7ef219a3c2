"""The status report's origins table, from real prometheus-client figures: downloads
by source host summed the way the status server sums a host's processes."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from common import metrics
from ops.status.host_figures import Sample, summarise
from ops.status.report import origins


def sample_of(registry: CollectorRegistry, at: float) -> Sample:
    summary = summarise(registry.collect())
    return Sample(
        at=at, counters=summary["counters"], histograms=summary["histograms"],
        gauges=summary["gauges"], processes=[], queues=[], broker_problem=None, disk=None,
        frontend_broker={},
    )  # fmt: skip


def test_each_source_host_gets_its_downloads_failures_refusals_and_p95() -> None:
    registry = CollectorRegistry()
    done = Counter(metrics.DOWNLOADS, "", ("host", "outcome"), registry=registry)
    seconds = Histogram(
        metrics.DOWNLOAD_SECONDS, "", ("host",), buckets=metrics.SECONDS_BUCKETS,
        registry=registry,
    )  # fmt: skip
    done.labels("old.example", "ok").inc(50)  # before the window: not shown
    before = sample_of(registry, 0.0)
    for _ in range(18):
        done.labels("cdn.example", "ok").inc()
        seconds.labels("cdn.example").observe(0.04)
    for _ in range(2):
        done.labels("cdn.example", "ok").inc()
        seconds.labels("cdn.example").observe(3.0)  # the slow tail: p95 lies there
    done.labels("cdn.example", "SourceBusy").inc(4)
    done.labels("cdn.example", "SourceHostPaused").inc(1)
    done.labels("down.example", "SourceUnavailable").inc(3)
    done.labels("down.example", "SourceTimeout").inc(1)
    done.labels(metrics.REFUSED_HOST, "SourceForbidden").inc(2)

    rows = {row.host: row for row in origins(before, sample_of(registry, 300.0))}

    assert list(rows) == ["cdn.example", "down.example", metrics.REFUSED_HOST]  # busiest first
    cdn = rows["cdn.example"]
    assert (cdn.downloads, cdn.failed, cdn.refused_busy) == (25, {}, 5)
    assert cdn.p95_ms is not None and 2500 <= cdn.p95_ms <= 5000
    down = rows["down.example"]
    assert down.failed == {"SourceUnavailable": 3, "SourceTimeout": 1} and down.refused_busy == 0
    assert rows[metrics.REFUSED_HOST].failed == {"SourceForbidden": 2}
