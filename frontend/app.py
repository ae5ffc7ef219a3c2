"""The image handler: the URL grammar, errors as plain text, every answer accounted."""

from __future__ import annotations

import json
import logging
from asyncio import Future
from types import TracebackType
from typing import Any

import tornado.web

from common import graphite, host_health, jobs
from common.errors import BadRequest, Forbidden, ImageServerError
from common.graphite import Graphite
from common.messages import PurgeImage
from common.settings import Settings
from common.signing import pregenerate_message, purge_message, verify
from common.urls import ImageRequest, parse_image_path
from frontend.accounting import REFUSED, Accounting, Lookup
from frontend.answers import (
    NO_SNIFF,
    SEPARATE_BODY_BYTES,
    image_headers,
    not_modified,
    send_body,
)
from frontend.clients import Caller, request_id
from frontend.service import ImageService

log = logging.getLogger(__name__)
MAX_OUTPUTS_PER_POST = 100


class ImageHandler(tornado.web.RequestHandler):
    def initialize(
        self,
        settings: Settings,
        service: ImageService,
        graphite: Graphite,
        accounting: Accounting,
    ) -> None:
        self.config = settings
        self.service = service
        self.graphite = graphite
        self.accounting = accounting
        self.lookup: Lookup = REFUSED
        self.output_format = "none"
        self.body_bytes = 0
        self.error_message: str | None = None
        self._resized: ImageRequest | None = None  # a miss resized for this request
        headers = self.request.headers
        self.caller = Caller(
            service.client_of(self.request.remote_ip or "", headers.get("X-Forwarded-For")),
            request_id(headers.get("X-Request-ID")),
        )
        self.set_header("X-Request-ID", self.caller.request_id)
        # Counted from here, not prepare(): an unknown method is refused before it.
        self.service.active_requests += 1
        self.accounting.figures.in_progress.inc()

    def set_default_headers(self) -> None:
        self.set_header(*NO_SNIFF)

    def finish(self, chunk: str | bytes | dict[str, Any] | None = None) -> Future[None]:
        # Counted before the answer leaves: whoever reads the figures after
        # getting an answer finds it counted.
        if not self._finished:
            self.accounting.answered(
                self.request.method or "",
                self.request.uri or "",
                self.get_status(),
                self.body_bytes,
                self.request.request_time(),
                self.lookup,
                self.output_format,
                self.error_message,
                self.caller,
                self.request.headers,
            )
        return super().finish(chunk)

    def on_finish(self) -> None:
        self.service.active_requests -= 1
        self.accounting.figures.in_progress.dec()
        if self._resized is not None:
            self.service.after_miss(self._resized)

    async def get(self) -> None:
        await self._serve(include_body=True)

    async def head(self) -> None:
        await self._serve(include_body=False)

    async def _serve(self, include_body: bool) -> None:
        # A miss of the cache-hit path (frontend/hits.py) comes parsed, allowed and negotiated.
        looked_up = self.service.misses_looked_up.pop(self.request.connection, None)
        request = looked_up or self._parsed_request()
        self.output_format = request.output.format
        cached, self.lookup = await self.service.get(
            request, self.caller, known_miss=looked_up is not None
        )
        if include_body:
            self.service.count_request(request)
        if self.lookup.cache == "miss" and not self.lookup.coalesced:
            self._resized = request
        max_age_s = self.config.cache_max_age_s
        for name, value in image_headers(cached, request, max_age_s).items():
            self.set_header(name, value)
        if not_modified(cached, self.request.headers):
            self.set_status(304)
            return
        self.set_header("Content-Length", cached.size)
        if include_body:
            self.body_bytes = cached.size
            await self._send(cached.data)

    async def _send(self, body: bytes | memoryview) -> None:
        if isinstance(body, bytes) and len(body) <= SEPARATE_BODY_BYTES:
            self.write(body)
            return
        # The headers first, then the body on its own: Tornado references a large
        # body instead of copying it (a mapped file stays the page cache's).
        self.flush()
        connection = self.request.connection
        assert connection is not None
        await send_body(connection, body, self.config.send_timeout_s)

    def _parsed_request(self) -> ImageRequest:
        """This request's output: parsed, allowed (signature or allowed_outputs), negotiated."""
        source = self.service.source_of(self.get_query_argument("source", None))
        request = self.service.parse(self.request.path, source)
        signature = self.get_query_argument("signature", None)
        self.service.authorise(request, signature, self.request.path)
        return self.service.negotiate(request, self.request.headers.get("Accept"))

    async def post(self) -> None:
        """Pre-generation: `POST /<model>/<imageType>/<id>?outputs=x300.jpg,w500.webp`.

        The first output not yet made is made now (so the original is fetched now,
        and a missing one is a 404); the others are queued as background work.
        Answers 202 with what was made, queued and already there. Signed with
        pregenerate_keys (any output the grammar allows); refused without them."""
        if not self.config.pregenerate_keys:
            raise Forbidden("pre-generation is off on this server (no pregenerate_keys)")
        source = self.service.source_of(self.get_query_argument("source", None))
        outputs = self.get_query_argument("outputs", "")
        given = self.get_query_argument("signature", None)
        message = pregenerate_message(self.request.path, outputs)
        verify(self.config.pregenerate_keys, message, source, given)
        names = [n for n in outputs.split(",") if n]
        if not names:
            raise BadRequest("name the outputs to make: ?outputs=x300.jpg,w500.webp")
        if len(names) > MAX_OUTPUTS_PER_POST:
            raise BadRequest(f"at most {MAX_OUTPUTS_PER_POST} outputs per request")
        requests = [self.service.parse(f"{self.request.path}/{name}", source) for name in names]
        answer: dict[str, list[str]] = {"made": [], "queued": [], "existing": [], "refused": []}
        first, *rest = requests
        _, lookup = await self.service.get(first)
        answer["existing" if lookup.cache in ("hit", "store") else "made"].append(first.output_name)
        for request in rest:
            answer[await self.service.queue_background(request)].append(request.output_name)
        self.set_status(202)
        self.set_header("Content-Type", "application/json")
        body = json.dumps(answer).encode()
        self.body_bytes = len(body)
        self.finish(body)

    async def delete(self) -> None:
        """Purge: `DELETE /<model>/<imageType>/<id>`, signed with purge_keys."""
        if not self.config.purge_keys:
            raise Forbidden("purging is off on this server (no purge_keys)")
        source = self.service.source_of(self.get_query_argument("source", None))
        given = self.get_query_argument("signature", None)
        verify(self.config.purge_keys, purge_message(self.request.path), source, given)
        image = parse_image_path(self.request.path)
        if source is not None:
            self.service.check_source(source)
        default_url = jobs.default_source_url(self.config, image)
        purge = PurgeImage(image.model, image.image_type, image.id, default_url, source or "")
        deleted = await self.service.purge(purge)
        self.set_header("Content-Type", "application/json")
        body = json.dumps({"purged": f"{image.kind}/{image.id}", "objects": deleted})
        self.body_bytes = len(body)
        self.finish(body)

    def compute_etag(self) -> None:
        return None  # ours comes from the file, set in _serve

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.graphite.event(graphite.IMAGE_REQUEST_FAIL)
        error = _app_error(kwargs.get("exc_info"))
        if error is not None:
            self.set_status(error.status)
            message = error.message
        else:  # Tornado's own (405, a malformed request) or a bug: never its traceback
            message = "internal error" if status_code >= 500 else self._reason
        self.error_message = message
        for header in ("Content-Length", "ETag", "Last-Modified", "Cache-Control"):
            self.clear_header(header)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.set_header("Cache-Control", error_cache_control(self.get_status(), self.config))
        self.set_header("X-Request-ID", self.caller.request_id)  # send_error cleared it
        if error is not None and error.retryable:
            self.set_header("Retry-After", str(error.retry_after_s))
        body = (message + "\n").encode()
        self.body_bytes = len(body)
        self.finish(body)

    def log_exception(
        self,
        typ: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not isinstance(value, ImageServerError):  # ours are in the request's log line
            super().log_exception(typ, value, tb)


def error_cache_control(status: int, settings: Settings) -> str:
    """How long a CDN may keep an error: a while for what a retry would not change,
    never for 429 and 5xx (a deploy, an outage, a busy host)."""
    if status == 429 or status >= 500:
        return "no-store"
    return f"public, max-age={settings.error_max_age_s}"


def _app_error(exc_info: Any) -> ImageServerError | None:
    if exc_info and isinstance(exc_info[1], ImageServerError):
        return exc_info[1]
    return None


class PublicHealthHandler(tornado.web.RequestHandler):
    """`GET`/`HEAD /health` on the public port, for a load balancer: 200 or 503, the
    status server's last verdict (common/host_health.py), no detail."""

    def initialize(self, settings: Settings) -> None:
        self.config = settings

    def set_default_headers(self) -> None:
        self.set_header(*NO_SNIFF)
        self.set_header("Cache-Control", "no-store")
        self.set_header("Content-Type", "text/plain; charset=utf-8")

    def get(self) -> None:
        healthy = host_health.healthy(self.config)
        self.set_status(200 if healthy else 503)
        self.finish(b"ok\n" if healthy else b"unhealthy\n")

    head = get  # Tornado sends no body for HEAD


def make_app(
    settings: Settings, service: ImageService, graphite: Graphite, accounting: Accounting
) -> tornado.web.Application:
    handler_args = {
        "settings": settings,
        "service": service,
        "graphite": graphite,
        "accounting": accounting,
    }
    return tornado.web.Application(
        # Every request target goes to ImageHandler, `*` and relative ones
        # included: one that is not in the grammar is its plain-text 400.
        [
            (r"/health", PublicHealthHandler, {"settings": settings}),
            (r"/.*", ImageHandler, handler_args),
        ],
        default_handler_class=ImageHandler,
        default_handler_args=handler_args,
        compress_response=False,
        log_function=_logged_by_accounting,
    )


def _logged_by_accounting(handler: tornado.web.RequestHandler) -> None:
    """Tornado's own access line is replaced by the JSON line of Accounting."""
