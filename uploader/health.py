"""The uploader's own health answer: is object storage reachable, is RabbitMQ.

`GET /health` on uploader_health_port: 200 when both are, 503 with the
reason otherwise (JSON either way). Storage's state is what the last start-up
check or upload found, so an unreachable store is reported from the first
second, not only after the first upload has failed.
"""

from __future__ import annotations

import http.server
import json
import threading

_IDLE_TIMEOUT_S = 5.0


class Health:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.storage_problem: str | None = "not checked yet"
        self.broker_connected = False
        self.queued_uploads = 0  # in image.upload, as last asked
        self.spilled_uploads = 0  # kept on disk by this host's processors
        self.rate_per_s = 1.0

    def storage_ok(self) -> None:
        with self._lock:
            self.storage_problem = None

    def storage_failed(self, reason: str) -> None:
        with self._lock:
            self.storage_problem = reason

    def storage_down(self) -> bool:
        with self._lock:
            return self.storage_problem is not None

    def report(self) -> tuple[int, dict[str, object]]:
        with self._lock:
            problem = self.storage_problem
        healthy = problem is None and self.broker_connected
        backlog = self.queued_uploads + self.spilled_uploads
        body: dict[str, object] = {
            "storage_reachable": problem is None,
            "storage_problem": problem,
            "broker_connected": self.broker_connected,
            "queued_uploads": self.queued_uploads,
            "spilled_uploads": self.spilled_uploads,
            # The whole backlog at upload_rate_per_s (other hosts' uploaders share the queue).
            "drain_estimate_s": round(backlog / self.rate_per_s),
        }
        return (200 if healthy else 503), body


def serve(health: Health, address: str, port: int) -> http.server.ThreadingHTTPServer:
    """Answer /health on a daemon thread; returns the server (shut it down to stop)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        # An idle or trickling client is dropped after this long: each connection
        # holds a thread, and a check must never wait behind a thousand of them.
        timeout = _IDLE_TIMEOUT_S

        def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
            self._answer(include_body=True)

        def do_HEAD(self) -> None:  # noqa: N802
            self._answer(include_body=False)

        def _answer(self, include_body: bool) -> None:
            status, body = health.report() if self.path == "/health" else (404, {})
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            if include_body:
                self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            return  # health checks every few seconds would flood the log

    server = http.server.ThreadingHTTPServer((address, port), Handler)
    threading.Thread(target=server.serve_forever, name="health", daemon=True).start()
    return server
