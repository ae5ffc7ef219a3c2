"""The host's figures, sampled every status_interval_s for the status server.

One thread samples: the Prometheus files of every program of the host
(common/metrics.py), RabbitMQ's queues (a passive declare per queue on the
sampler's own connection: message and consumer counts straight from the
broker; unacked messages and rates from its management API), and the
janitor's disk figures. The status server's handlers only read the last
sample and the history kept for the charts, so a page, a scrape or a health
check never waits on a file or a socket, and never changes anything.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import math
import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pika
import pika.exceptions
from prometheus_client import CollectorRegistry, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from common import amqp, metrics
from common.files import Space, space_of
from common.settings import Settings
from common.spill import upload_host
from ops.janitor import USAGE_FILE
from ops.status import incidents, queue_stats
from ops.status.build_info import Build

log = logging.getLogger(__name__)
HISTORY_S = 30 * 60  # what the charts show
RATE_WINDOW_S = 60.0  # requests per second: over the last minute
STATS_RETRY_S = 30.0  # the management API, after it failed
LATENCY_WINDOW_S = 300.0  # quantiles: over the last five minutes
CHART_WINDOW_S = 30.0  # each chart point: quantiles over this much


@dataclasses.dataclass(frozen=True)
class Process:
    program: str
    num: str
    pid: int
    started_epoch_s: float
    serving: bool
    # From /proc when sampled (multiprocess metrics have no process collector).
    rss_bytes: int = 0
    cpu_s: float = 0.0
    # Pids of this program and number seen since the status server started, less one.
    restarts: int = 0


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def with_usage(process: Process) -> Process:
    """`process` with its resident memory and CPU time so far (as it was when gone)."""
    try:
        stat = Path(f"/proc/{process.pid}/stat").read_text()
        statm = Path(f"/proc/{process.pid}/statm").read_text()
    except OSError:
        return process
    fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    cpu_s = (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS  # utime + stime
    rss_bytes = int(statm.split()[1]) * _PAGE_BYTES
    return dataclasses.replace(process, rss_bytes=rss_bytes, cpu_s=round(cpu_s, 2))


@dataclasses.dataclass(frozen=True)
class QueueFigures:
    name: str
    messages: int | None  # ready; None: the queue does not exist (yet)
    consumers: int | None
    # From the management API (ops/status/queue_stats.py); None: not read.
    unacked: int | None = None
    in_per_s: float | None = None
    out_per_s: float | None = None
    drain_s: float | None = None  # the ready messages at out_per_s (None: waiting, none go out)


@dataclasses.dataclass(frozen=True)
class Sample:
    at: float
    counters: dict[str, float]  # name (with selected labels) -> total over the host
    histograms: dict[str, list[tuple[float, float]]]  # name -> cumulative (le, count)
    gauges: dict[str, float]
    processes: list[Process]
    queues: list[QueueFigures]
    broker_problem: str | None
    disk: dict[str, Any] | None
    frontend_broker: dict[str, tuple[bool, bool]]  # num -> (connected, blocked)
    filesystems: list[Space] = dataclasses.field(default_factory=list)  # the host writes to
    failures: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # newest first
    storage: dict[str, Any] = dataclasses.field(default_factory=dict)  # the uploader's /health
    queue_stats_problem: str | None = None  # what kept RabbitMQ's management API

    def total(self, counter: str, label_value: str = "") -> float:
        """A counter of common/metrics.py summed over the host (only the series
        with `label_value` of its status, outcome or result label, when given)."""
        return self.counters.get(
            f"{counter}_total" + (f":{label_value}" if label_value else ""), 0.0
        )

    def observations(self, histogram: str, label_value: str = "") -> float:
        """How many values a histogram holds (of the series with `label_value`)."""
        return self.counters.get(
            f"{histogram}_count" + (f":{label_value}" if label_value else ""), 0.0
        )

    def gauge(self, name: str) -> float:
        return self.gauges.get(name, 0.0)

    def queue(self, name: str) -> QueueFigures:
        return next(q for q in self.queues if q.name == name)


def read_families(metrics_dir: Any) -> list[Metric]:
    registry = CollectorRegistry()
    MultiProcessCollector(registry, str(metrics_dir))
    return list(registry.collect())


def summarise(families: Iterable[Metric]) -> dict[str, Any]:
    """Counters, gauges and histograms summed over processes and labels; the
    per-process series the page lists."""
    counters: collections.defaultdict[str, float] = collections.defaultdict(float)
    gauges: collections.defaultdict[str, float] = collections.defaultdict(float)
    buckets: dict[str, collections.defaultdict[float, float]] = collections.defaultdict(
        lambda: collections.defaultdict(float)
    )
    starts: dict[int, dict[str, str]] = {}
    start_times: dict[int, float] = {}
    serving: dict[int, bool] = {}
    broker: dict[str, list[bool]] = {}
    for family in families:
        for sample in family.samples:
            name, labels, value = sample.name, sample.labels, sample.value
            counts = (family.type == "counter" and name.endswith("_total")) or (
                family.type == "histogram" and name.endswith("_count")
            )
            if counts:
                counters[name] += value
                for label in ("status", "outcome", "cache"):
                    if label in labels:
                        counters[f"{name}:{labels[label]}"] += value
                if "status" in labels:
                    counters[f"{name}:{labels['status'][0]}xx"] += value
                if "host" in labels:  # downloads by source host: name@host, name@host@outcome
                    counters[f"{name}@{labels['host']}"] += value
                    if "outcome" in labels:
                        counters[f"{name}@{labels['host']}@{labels['outcome']}"] += value
            elif family.type == "histogram" and name.endswith("_sum"):
                counters[name] += value  # seconds spent: how busy the resize threads are
            elif family.type == "histogram" and name.endswith("_bucket"):
                buckets[family.name][float(labels["le"])] += value
                if "host" in labels:
                    buckets[f"{family.name}@{labels['host']}"][float(labels["le"])] += value
            elif name == metrics.PROCESS_START_TIME:
                pid = int(labels["pid"])
                starts[pid] = labels
                start_times[pid] = value
            elif name == metrics.PROCESS_SERVING:
                serving[int(labels["pid"])] = value == 1
            elif name in (metrics.BROKER_CONNECTED, metrics.BROKER_BLOCKED):
                flags = broker.setdefault(labels["num"], [False, False])
                flags[name == metrics.BROKER_BLOCKED] = value == 1
            elif family.type == "gauge":
                gauges[name] += value
    processes = sorted(
        (
            Process(
                labels["program"],
                labels["num"],
                pid,
                start_times[pid],
                serving.get(pid, False),
            )
            for pid, labels in starts.items()
        ),
        key=lambda p: (p.program, int(p.num), p.started_epoch_s),
    )
    return {
        "counters": dict(counters),
        "gauges": dict(gauges),
        "histograms": {name: sorted(counts.items()) for name, counts in buckets.items()},
        "processes": processes,
        "frontend_broker": {num: (flags[0], flags[1]) for num, flags in broker.items()},
    }


def quantile(
    q: float, before: list[tuple[float, float]], after: list[tuple[float, float]]
) -> float | None:
    """Prometheus' histogram_quantile over what happened between two samples."""
    earlier = dict(before)
    deltas = [(le, count - earlier.get(le, 0.0)) for le, count in after]
    if not deltas or deltas[-1][1] <= 0:
        return None
    rank = q * deltas[-1][1]
    lower_le, lower_count = 0.0, 0.0
    for le, count in deltas:
        if count >= rank:
            if math.isinf(le):
                return lower_le
            share = (rank - lower_count) / (count - lower_count) if count > lower_count else 1.0
            return lower_le + (le - lower_le) * share
        lower_le, lower_count = le, count
    return lower_le


class Queues:
    """The project's queues: message and consumer counts asked of RabbitMQ (a
    passive declare: exact, no statistics delay), unacked messages and rates
    from its management API."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._connection: pika.BlockingConnection | None = None
        host = upload_host(settings.spill_dir)  # this host's uploads by reference
        names = [
            amqp.RESIZE_QUEUE,
            amqp.BACKGROUND_QUEUE,
            amqp.RESIZE_DEAD_QUEUE,
            amqp.UPLOAD_QUEUE,
            amqp.host_upload_queue(host),
        ]
        delays = sorted(set(settings.upload_retry_delays_s))
        names += [amqp.upload_delay_queue(delay, of) for of in ("", host) for delay in delays]
        self.names = [*names, amqp.UPLOAD_DEAD_QUEUE]
        self._stats_retry_at = 0.0
        self._stats_problem: str | None = None

    def read(self) -> tuple[list[QueueFigures], str | None, str | None]:
        """The queues, what kept RabbitMQ from answering, what kept its management API
        (asked again STATS_RETRY_S after it failed: a node that drops packets costs
        the sampler a timeout per node)."""
        counted, broker_problem = self._counts()
        if time.monotonic() < self._stats_retry_at:
            return counted, broker_problem, self._stats_problem
        try:
            stats = queue_stats.read(self._settings)
        except queue_stats.QueueStatsUnavailable as exc:
            self._stats_problem = str(exc)
            self._stats_retry_at = time.monotonic() + STATS_RETRY_S
            return counted, broker_problem, self._stats_problem
        return (
            [_with_stats(queue, stats.get(queue.name)) for queue in counted],
            broker_problem,
            None,
        )

    def _counts(self) -> tuple[list[QueueFigures], str | None]:
        try:
            if self._connection is None or not self._connection.is_open:
                self._connection = amqp.blocking_connection(self._settings)
            return [self._one(name) for name in self.names], None
        except (pika.exceptions.AMQPError, OSError) as exc:
            self._connection = None
            problem = f"RabbitMQ unreachable: {type(exc).__name__} {exc}".strip()
            return [QueueFigures(name, None, None) for name in self.names], problem

    def _one(self, name: str) -> QueueFigures:
        assert self._connection is not None
        channel = self._connection.channel()
        try:
            declared = channel.queue_declare(name, passive=True)
        except pika.exceptions.ChannelClosedByBroker:
            return QueueFigures(name, None, None)  # not declared yet: nothing used it
        channel.close()
        method = declared.method
        return QueueFigures(name, int(method.message_count), int(method.consumer_count))

    def close(self) -> None:
        if self._connection is not None and self._connection.is_open:
            self._connection.close()


def _with_stats(queue: QueueFigures, stats: queue_stats.QueueStats | None) -> QueueFigures:
    if stats is None:
        return queue
    drain_s = None  # messages wait and none go out: never, at this rate
    if queue.messages == 0:
        drain_s = 0.0
    elif queue.messages is not None and stats.out_per_s > 0:
        drain_s = round(queue.messages / stats.out_per_s, 1)
    return dataclasses.replace(
        queue,
        unacked=stats.unacked,
        in_per_s=stats.in_per_s,
        out_per_s=stats.out_per_s,
        drain_s=drain_s,
    )


def filesystems(settings: Settings) -> list[Space]:
    """The space left on each filesystem the host writes to (caches, spilled uploads,
    logs), once per filesystem."""
    seen, found = set(), []
    for directory in (
        settings.cache_dir,
        settings.originals_dir,
        settings.spill_dir,
        settings.access_log_dir,
    ):
        space = space_of(directory)
        if space.device not in seen:
            seen.add(space.device)
            found.append(space)
    return found


class HostFigures:
    """Samples on a thread of its own; `latest` and `history` for the handlers."""

    def __init__(self, settings: Settings, build: Build) -> None:
        self._settings = settings
        self.build = build  # what runs here: the same for every sample
        self._queues = Queues(settings)
        self._pids_seen: dict[tuple[str, str], set[int]] = {}  # by program and number
        self._lock = threading.Lock()
        self._history: collections.deque[Sample] = collections.deque(
            maxlen=max(2, int(HISTORY_S / settings.status_interval_s))
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def start(self) -> None:
        self.sample_once()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._queues.close()

    def _run(self) -> None:
        while not self._stop.wait(self._settings.status_interval_s):
            try:
                self.sample_once()
            except Exception:  # a bad sample must not end sampling
                log.exception("sampling the host's figures failed")

    def sample_once(self) -> None:
        metrics.forget_dead_processes(self._settings.metrics_dir)
        summary = summarise(read_families(self._settings.metrics_dir))
        summary["processes"] = [
            self._with_restarts(with_usage(process)) for process in summary["processes"]
        ]
        queues, broker_problem, stats_problem = self._queues.read()
        sample = Sample(
            at=time.time(),
            queues=queues,
            broker_problem=broker_problem,
            queue_stats_problem=stats_problem,
            disk=self._disk(),
            filesystems=filesystems(self._settings),
            failures=incidents.recent_failures(self._settings),
            storage=incidents.storage_health(self._settings),
            **summary,
        )
        with self._lock:
            self._history.append(sample)

    def _with_restarts(self, process: Process) -> Process:
        pids = self._pids_seen.setdefault((process.program, process.num), set())
        pids.add(process.pid)
        return dataclasses.replace(process, restarts=len(pids) - 1)

    def _disk(self) -> dict[str, Any] | None:
        try:
            usage: dict[str, Any] = json.loads((self._settings.cache_dir / USAGE_FILE).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return usage

    @property
    def history(self) -> list[Sample]:
        with self._lock:
            return list(self._history)

    @property
    def latest(self) -> Sample:
        with self._lock:
            return self._history[-1]

    def sample_before(self, seconds: float) -> Sample:
        """The oldest sample within the last `seconds` (the first one if none is older)."""
        history = self.history
        cutoff = history[-1].at - seconds
        for sample in history:
            if sample.at >= cutoff:
                return sample
        return history[0]
