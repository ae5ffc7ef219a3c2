"""The host's status server (`python -m ops.status`, supervisord program status).

On status_port, one per host, beside the request path (its own process):
`GET /` the page, `/status.json` the same figures, `/health` 200 when the host
can serve and 503 with the reason otherwise, `/metrics` Prometheus' text
format with every program's figures (common/metrics.py) plus the queues and
disk figures sampled here.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import signal
import socket
import time
from collections.abc import Iterator

import tornado.httpserver
import tornado.web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from common import host_health, program
from common.settings import Settings
from frontend.answers import NO_SNIFF
from ops.status import build_info
from ops.status import page as status_page
from ops.status.host_figures import HostFigures
from ops.status.report import health, report

log = logging.getLogger("status")


class SampledFigures(Collector):
    """Queue and disk figures of the last sample, as Prometheus gauges."""

    def __init__(self, host: HostFigures, settings: Settings) -> None:
        self._host = host
        self._settings = settings

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        sample = self._host.latest
        messages = GaugeMetricFamily(
            "image_server_queue_messages", "Messages ready in a queue.", labels=["queue"]
        )
        consumers = GaugeMetricFamily(
            "image_server_queue_consumers", "Consumers of a queue.", labels=["queue"]
        )
        unacked = GaugeMetricFamily(
            "image_server_queue_unacked_messages",
            "Messages of a queue delivered and not yet acked (management API).",
            labels=["queue"],
        )
        published = GaugeMetricFamily(
            "image_server_queue_published_per_second",
            "Messages published to a queue per second (management API).",
            labels=["queue"],
        )
        acked = GaugeMetricFamily(
            "image_server_queue_acked_per_second",
            "Messages of a queue acked per second: taken and done (management API).",
            labels=["queue"],
        )
        for queue in sample.queues:
            if queue.messages is not None and queue.consumers is not None:
                messages.add_metric([queue.name], queue.messages)
                consumers.add_metric([queue.name], queue.consumers)
            if queue.unacked is not None and queue.in_per_s is not None:
                unacked.add_metric([queue.name], queue.unacked)
                published.add_metric([queue.name], queue.in_per_s)
                acked.add_metric([queue.name], queue.out_per_s or 0.0)
        used = GaugeMetricFamily(
            "image_server_cache_disk_bytes", "Disk used by a per-host cache.", labels=["cache"]
        )
        budget = GaugeMetricFamily(
            "image_server_cache_budget_bytes", "Disk budget of a per-host cache.", labels=["cache"]
        )
        for name, figures in (sample.disk or {}).items():
            if isinstance(figures, dict):
                used.add_metric([name], figures["bytes_used"])
                budget.add_metric([name], figures["max_bytes"])
        up = GaugeMetricFamily(
            "image_server_broker_reachable", "1 when the status server reaches RabbitMQ."
        )
        up.add_metric([], 1 if sample.broker_problem is None else 0)
        yield GaugeMetricFamily(
            "image_server_healthy",
            "1 when /health answers 200: the verdict a load balancer acts on (0: 503).",
            value=1 if health(sample, time.time(), self._settings) is None else 0,
        )
        free = GaugeMetricFamily(
            "image_server_filesystem_free_share",
            "Free share (bytes or inodes, the smaller) of each filesystem the host writes to.",
            labels=["path"],
        )
        for space in sample.filesystems:
            free.add_metric([space.path], space.free_share)
        yield free
        swept = (sample.disk or {}).get("updated_epoch_s")
        if swept is not None:
            yield GaugeMetricFamily(
                "image_server_janitor_sweep_age_seconds",
                "Seconds since the janitor's last sweep (growing: it is not running).",
                value=sample.at - float(swept),
            )
        memory = GaugeMetricFamily(
            "image_server_process_resident_memory_bytes",
            "Resident memory of each process of the host.",
            labels=["program", "num", "pid"],
        )
        cpu = CounterMetricFamily(
            "image_server_process_cpu_seconds",
            "CPU time (user and system) of each process of the host since it started.",
            labels=["program", "num", "pid"],
        )
        for process in sample.processes:
            labels = [process.program, process.num, str(process.pid)]
            memory.add_metric(labels, process.rss_bytes)
            cpu.add_metric(labels, process.cpu_s)
        yield from (memory, cpu)
        build = self._host.build
        info = GaugeMetricFamily(
            "image_server_build_info",
            "What runs on this host (always 1).",
            labels=["version", "commit", "libvips", "environment"],
        )
        info.add_metric([build.version, build.commit, build.libvips, build.environment], 1)
        yield from (messages, consumers, unacked, published, acked, used, budget, up, info)


class Rendered:
    """The page and /status.json of the latest sample, made once per sample however
    many clients load them: loading the page cannot slow /health down."""

    def __init__(self, host: HostFigures, settings: Settings) -> None:
        self._host = host
        self._settings = settings
        self._sampled_at: float | None = None
        self.json = b""
        self.page = b""

    def fresh(self) -> Rendered:
        latest = self._host.latest
        if latest.at != self._sampled_at:
            figures = report(self._host, self._settings)
            self.json = json.dumps(figures.as_json()).encode()
            self.page = status_page.render(figures, socket.gethostname()).encode()
            self._sampled_at = latest.at
        return self


class _Handler(tornado.web.RequestHandler):
    def initialize(
        self,
        settings: Settings,
        host: HostFigures,
        registry: CollectorRegistry,
        rendered: Rendered,
    ) -> None:
        self.config = settings
        self.host = host
        self.registry = registry
        self.rendered = rendered

    def set_default_headers(self) -> None:
        self.set_header(*NO_SNIFF)
        self.set_header("Cache-Control", "no-store")

    def prepare(self) -> None:
        """With status_token, every path but /health needs it as a bearer token."""
        token = self.config.status_token
        if not token or isinstance(self, HealthHandler):
            return
        given = self.request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            self.set_status(401)
            self.set_header("WWW-Authenticate", 'Bearer realm="image-server status"')
            self.set_header("Content-Type", "text/plain; charset=utf-8")
            self.finish("this status server needs Authorization: Bearer <status_token>\n")


class PageHandler(_Handler):
    def get(self) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(self.rendered.fresh().page)


class JsonHandler(_Handler):
    def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(self.rendered.fresh().json)


class HealthHandler(_Handler):
    def get(self) -> None:
        problem = health(self.host.latest, time.time(), self.config)
        self.set_header("Content-Type", "application/json")
        if problem is not None:
            self.set_status(503)
        self.finish(json.dumps({"healthy": problem is None, "reason": problem}))

    head = get  # Tornado sends no body for HEAD


class MetricsHandler(_Handler):
    async def get(self) -> None:
        # Reading every process' files is blocking I/O: off the event loop.
        loop = asyncio.get_running_loop()
        body = await loop.run_in_executor(None, generate_latest, self.registry)
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(body)


def make_app(settings: Settings, host: HostFigures) -> tornado.web.Application:
    registry = CollectorRegistry()
    MultiProcessCollector(registry, str(settings.metrics_dir))
    registry.register(SampledFigures(host, settings))
    rendered = Rendered(host, settings)
    args = {"settings": settings, "host": host, "registry": registry, "rendered": rendered}
    return tornado.web.Application(
        [
            (r"/", PageHandler, args),
            (r"/status\.json", JsonHandler, args),
            (r"/health", HealthHandler, args),
            (r"/metrics", MetricsHandler, args),
        ],
        log_function=lambda handler: None,  # polled every few seconds: no line each time
    )


async def publish_health(settings: Settings, host: HostFigures) -> None:
    """Write the host's verdict for the frontends' public /health (common/host_health.py)."""
    loop = asyncio.get_running_loop()
    while True:
        problem = health(host.latest, time.time(), settings)
        await loop.run_in_executor(None, host_health.publish, settings, problem is None)
        await asyncio.sleep(settings.status_interval_s)


async def serve(settings: Settings, environment: str) -> None:
    host = HostFigures(settings, build_info.current(settings, environment))
    await asyncio.get_running_loop().run_in_executor(None, host.start)
    server = tornado.httpserver.HTTPServer(make_app(settings, host))
    server.listen(settings.status_port, settings.status_bind_address)
    log.info("status server on %s:%d", settings.status_bind_address, settings.status_port)
    publishing = asyncio.create_task(publish_health(settings, host))
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    await stop.wait()
    publishing.cancel()
    server.stop()
    await asyncio.get_running_loop().run_in_executor(None, host.stop)


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    args, settings = program.start("status", "Image server status server", argv, prog)
    settings.metrics_dir.mkdir(parents=True, exist_ok=True)
    asyncio.run(serve(settings, args.env))
    log.info("stopped")


if __name__ == "__main__":
    main()
