"""Plain cache hits served below Tornado's web layer.

A GET or HEAD without a query string (and without signing) whose output is
in the local cache is answered straight from the HTTP connection: no
RequestHandler, no routing. That halves the cost of a hit. Everything else
(misses, errors, `source=`, signed URLs) goes to the Application unchanged;
a miss with the request as parsed and negotiated here, so that the handler
does not do it again (ImageService.misses_looked_up).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable

import tornado.web
from tornado import httputil

from common.errors import ImageServerError
from common.settings import Settings
from common.urls import ImageRequest
from frontend.accounting import HIT, Accounting
from frontend.answers import (
    SEPARATE_BODY_BYTES,
    date_header,
    image_headers,
    not_modified,
    send_body,
)
from frontend.clients import Caller, request_id
from frontend.service import ImageService

log = logging.getLogger(__name__)


class CacheHitsFirst(httputil.HTTPServerConnectionDelegate):
    def __init__(
        self,
        app: tornado.web.Application,
        settings: Settings,
        service: ImageService,
        accounting: Accounting,
    ) -> None:
        self.app = app
        self._settings = settings
        self.send_timeout_s = settings.send_timeout_s
        self.service = service
        self.accounting = accounting
        # Hot paths repeat: parse each once.
        self._parse = functools.lru_cache(maxsize=8192)(self._parse_uncached)

    def _parse_uncached(self, path: str) -> ImageRequest | None:
        """The request of a plain path; None when the Application must answer it
        (an error, or an output unsigned requests may not have)."""
        try:
            request = self.service.parse(path, None)
        except ImageServerError:
            return None
        return request if self.service.unsigned_allowed(request) else None

    def start_request(
        self, server_conn: object, request_conn: httputil.HTTPConnection
    ) -> httputil.HTTPMessageDelegate:
        return _HitOrApplication(self, server_conn, request_conn)

    def client_of(self, connection: httputil.HTTPConnection, forwarded_for: str | None) -> str:
        """The client of a request on `connection` (frontend/clients.py)."""
        peer = getattr(getattr(connection, "context", None), "remote_ip", "") or ""
        return self.service.client_of(peer, forwarded_for)

    def on_close(self, server_conn: object) -> None:
        self.app.on_close(server_conn)

    def look_up(
        self, start_line: httputil.RequestStartLine, headers: httputil.HTTPHeaders
    ) -> tuple[ImageRequest | None, _Answer | None]:
        """A plain request, parsed and negotiated, and its answer when the cache has
        it. (None, None) leaves the request to the Application, which also gets
        anything unexpected here (and answers it, 500 at worst)."""
        try:
            return self._look_up(start_line, headers)
        except Exception:
            log.exception("the cache-hit path failed on %r", start_line.path[:200])
            return None, None

    def _look_up(
        self, start_line: httputil.RequestStartLine, headers: httputil.HTTPHeaders
    ) -> tuple[ImageRequest | None, _Answer | None]:
        if start_line.method not in ("GET", "HEAD") or "?" in start_line.path:
            return None, None
        request = self._parse(start_line.path)
        if request is None:
            return None, None  # the Application answers with the error
        request = self.service.negotiate(request, headers.get("Accept"))
        cached = self.service.cache_hit(request)
        if cached is None:
            return request, None
        answer = httputil.HTTPHeaders(
            image_headers(cached, request, self._settings.cache_max_age_s)
        )
        answer["Date"] = date_header(time.time())
        answer["X-Request-ID"] = request_id(headers.get("X-Request-ID"))
        if start_line.method == "GET":
            self.service.count_request(request)
        body: bytes | memoryview = b""
        if not_modified(cached, headers):
            status, reason = 304, "Not Modified"
        else:
            status, reason = 200, "OK"
            answer["Content-Length"] = str(cached.size)
            body = cached.data if start_line.method == "GET" else b""
        start = httputil.ResponseStartLine("HTTP/1.1", status, reason)
        return request, _Answer(start, answer, body, request.output.format)


class _Answer:
    def __init__(
        self,
        start: httputil.ResponseStartLine,
        headers: httputil.HTTPHeaders,
        body: bytes | memoryview,
        output_format: str,
    ) -> None:
        self.start, self.headers, self.body = start, headers, body
        self.output_format = output_format


class _HitOrApplication(httputil.HTTPMessageDelegate):
    def __init__(
        self, owner: CacheHitsFirst, server_conn: object, connection: httputil.HTTPConnection
    ) -> None:
        self._owner = owner
        self._server_conn = server_conn
        self._connection = connection
        self._delegate: httputil.HTTPMessageDelegate | None = None
        self._answer: _Answer | None = None
        self._method, self._path = "", ""
        self._headers = httputil.HTTPHeaders()
        self._started = 0.0

    def headers_received(
        self,
        start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
        headers: httputil.HTTPHeaders,
    ) -> Awaitable[None] | None:
        assert isinstance(start_line, httputil.RequestStartLine)
        self._method, self._path = start_line.method, start_line.path
        self._headers = headers
        self._started = time.perf_counter()
        request, self._answer = self._owner.look_up(start_line, headers)
        if self._answer is not None:
            return None  # answered in finish(): before the request is read, keep-alive is lost
        if request is not None:  # a miss: the handler takes it as it is (no second parse)
            self._owner.service.misses_looked_up[self._connection] = request
        self._delegate = self._owner.app.start_request(self._server_conn, self._connection)
        return self._delegate.headers_received(start_line, headers)

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        return self._delegate.data_received(chunk) if self._delegate else None

    def finish(self) -> None:
        if self._answer is not None:
            answer = self._answer
            accounting = self._owner.accounting
            caller = None
            if accounting.logs_requests:  # the client is for the request line only
                client = self._owner.client_of(
                    self._connection, self._headers.get("X-Forwarded-For")
                )
                caller = Caller(client, answer.headers["X-Request-ID"])
            accounting.answered(  # counted before it leaves, as app.py does
                self._method,
                self._path,
                answer.start.code,
                len(answer.body),
                time.perf_counter() - self._started,
                HIT,
                answer.output_format,
                caller=caller,
                headers=self._headers,
            )
            if len(answer.body) > SEPARATE_BODY_BYTES:
                # Tornado would copy the body in behind the headers: sent on its own, it
                # is referenced, not copied (a mapped file stays the page cache's).
                self._connection.write_headers(answer.start, answer.headers)
                timeout_s = self._owner.send_timeout_s
                sent = send_body(self._connection, answer.body, timeout_s)
                sent.add_done_callback(lambda _: self._connection.finish())
                return
            else:  # one send for both
                body = bytes(answer.body) if answer.body else None  # a small mapped file: copied
                self._connection.write_headers(answer.start, answer.headers, body)
            self._connection.finish()
        elif self._delegate is not None:
            self._delegate.finish()

    def on_connection_close(self) -> None:
        if self._delegate is not None:
            self._delegate.on_connection_close()
