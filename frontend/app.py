"""HTTP handlers: the image URL grammar, and the status page."""

from __future__ import annotations

import json
import logging
import os
from types import TracebackType
from typing import Any

import tornado.web

from common import metrics
from common.config import Settings
from common.errors import ImageServerError
from common.metrics import Metrics
from common.signing import verify
from frontend.answers import NO_SNIFF, image_headers, not_modified
from frontend.rpc import ResizeClient
from frontend.service import ImageService

log = logging.getLogger(__name__)


class ImageHandler(tornado.web.RequestHandler):
    def initialize(self, settings: Settings, service: ImageService, metrics: Metrics) -> None:
        self.config = settings
        self.service = service
        self.metrics = metrics

    def set_default_headers(self) -> None:
        self.set_header(*NO_SNIFF)

    def prepare(self) -> None:
        self.service.active_requests += 1

    def on_finish(self) -> None:
        self.service.active_requests -= 1

    async def get(self) -> None:
        await self._serve(include_body=True)

    async def head(self) -> None:
        await self._serve(include_body=False)

    async def _serve(self, include_body: bool) -> None:
        self.service.counters["requests"] += 1
        source = self.get_query_argument("source", None)
        if self.config.signing_keys:
            given = self.get_query_argument("signature", None)
            verify(self.config.signing_keys, self.request.path, source, given)
        request = self.service.parse(self.request.path, source)
        request = self.service.negotiate(request, self.request.headers.get("Accept"))
        cached = await self.service.get(request)
        max_age_s = self.config.cache_max_age_s
        for name, value in image_headers(cached, request, max_age_s).items():
            self.set_header(name, value)
        if not_modified(cached, self.request.headers):
            self.set_status(304)
            return
        self.set_header("Content-Length", cached.size)
        if include_body:
            self.write(cached.data)

    def compute_etag(self) -> None:
        return None  # ours comes from the file, set in _serve

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.metrics.event(metrics.IMAGE_REQUEST_FAIL)
        error = _app_error(kwargs.get("exc_info"))
        if error is not None:
            self.set_status(error.status)
            self.service.counters[f"status_{error.status}"] += 1
            message = error.message
        else:
            self.service.counters[f"status_{status_code}"] += 1
            message = self._reason
        for header in ("Content-Length", "ETag", "Last-Modified", "Cache-Control"):
            self.clear_header(header)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        if error is not None and error.retryable:
            self.set_header("Retry-After", "1")
        self.finish(message + "\n")

    def log_exception(
        self,
        typ: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if isinstance(value, ImageServerError):
            log.info(
                "%s %s: %d %s", self.request.method, self.request.uri, value.status, value.message
            )
        else:
            super().log_exception(typ, value, tb)


def _app_error(exc_info: Any) -> ImageServerError | None:
    if exc_info and isinstance(exc_info[1], ImageServerError):
        return exc_info[1]
    return None


def make_app(
    settings: Settings, service: ImageService, metrics: Metrics
) -> tornado.web.Application:
    handler_args = {"settings": settings, "service": service, "metrics": metrics}
    return tornado.web.Application(
        # Every request target goes to ImageHandler, `*` and relative ones
        # included: one that is not in the grammar is its plain-text 400.
        [(r"/.*", ImageHandler, handler_args)],
        default_handler_class=ImageHandler,
        default_handler_args=handler_args,
        compress_response=False,
    )


class HealthHandler(tornado.web.RequestHandler):
    def initialize(self, service: ImageService, rpc: ResizeClient) -> None:
        self.service = service
        self.rpc = rpc

    def set_default_headers(self) -> None:
        self.set_header(*NO_SNIFF)

    def get(self) -> None:
        if not self.rpc.ready or self.rpc.blocked_reason is not None:
            self.set_status(503)
        self.report()

    def report(self, **extra: object) -> None:
        self.set_header("Content-Type", "application/json")
        report = {
            "pid": os.getpid(),
            "broker_connected": self.rpc.ready,
            "broker_blocked": self.rpc.blocked_reason,  # null, or RabbitMQ's alarm
            **extra,
        }
        self.finish(json.dumps(report))


class StatusHandler(HealthHandler):
    def get(self) -> None:
        self.report(counters=dict(self.service.counters), disk=self.service.disk_usage())


def make_status_app(service: ImageService, rpc: ResizeClient) -> tornado.web.Application:
    args = {"service": service, "rpc": rpc}
    return tornado.web.Application(
        [(r"/health", HealthHandler, args), (r"/status", StatusHandler, args)]
    )
