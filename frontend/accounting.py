"""Where an answered image request is counted (Prometheus) and logged (one JSON line).

Both request paths end here: plain cache hits answered below Tornado's web
layer (frontend/hits.py) and everything the Application answers.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from common.metrics import FrontendFigures
from common.settings import Settings
from frontend.clients import Caller

_MAX_LOGGED_PATH = 2048  # a hostile path of any length must not make a huge line
_MAX_LOGGED_HEADER = 256
_ENCODER = json.JSONEncoder(ensure_ascii=False)  # json.dumps would build one per line


@dataclasses.dataclass(frozen=True)
class Lookup:
    """Where a request's output came from."""

    cache: str  # hit (local cache), store (object storage), miss (resized), none (refused first)
    coalesced: bool = False  # waited on a resize another request had started


HIT = Lookup("hit")
REFUSED = Lookup("none")


class AccessLog:
    """The request lines of one frontend process, in a file of their own.

    Written in batches (every FLUSH_S on the frontend's loop, or every BATCH
    lines) straight to `access_frontend_<N>.log`, not through supervisord's
    pipe: that pipe cost about 7% of the cache-hit rate, the file nothing
    measurable (bench/TUNING.md). Rotated here as supervisord rotates the
    other logs: past MAX_BYTES the file becomes `.1` (`.1` becomes `.2`...,
    BACKUPS kept). Same fields as every other line (common.program.JsonLines).
    """

    BATCH = 256
    FLUSH_S = 0.5
    MAX_BYTES = 20 * 1024 * 1024  # as supervisord.conf rotates the programs' own logs
    BACKUPS = 4

    def __init__(self, path: Path, program: str = "frontend") -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - lives with the process
        self._head = {"program": program, "pid": os.getpid(), "level": "INFO", "logger": "access"}
        self._lines: list[str] = []
        self._second, self._stamp = -1, ""

    def add(self, msg: str, fields: dict[str, object]) -> None:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        stamp = f"{self._stamp}.{int((now - second) * 1000):03d}Z"
        line = {"ts": stamp, **self._head, "msg": msg, **fields}
        self._lines.append(_ENCODER.encode(line))
        if len(self._lines) >= self.BATCH:
            self.flush()

    def flush(self) -> None:
        if not self._lines:
            return
        self._file.write("\n".join(self._lines) + "\n")
        self._file.flush()
        self._lines.clear()
        if self._file.tell() > self.MAX_BYTES:
            self._rotate()

    def _rotate(self) -> None:
        self._file.close()
        for index in range(self.BACKUPS - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{index}")
            if older.exists():
                older.replace(self.path.with_name(f"{self.path.name}.{index + 1}"))
        self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115

    def close(self) -> None:
        self.flush()
        self._file.close()


class Accounting:
    def __init__(self, settings: Settings, figures: FrontendFigures, log: AccessLog) -> None:
        self._log = log if settings.access_log else None
        self.figures = figures
        # Labelled series, looked up once (prometheus-client's labels() takes a lock).
        self._requests: dict[tuple[int, str], Any] = {}
        self._seconds: dict[str, Any] = {}

    @property
    def logs_requests(self) -> bool:
        """Whether request lines are written (what a caller's details are for)."""
        return self._log is not None

    def answered(
        self,
        method: str,
        path: str,
        status: int,
        body_bytes: int,
        duration_s: float,
        lookup: Lookup,
        output_format: str,
        error: str | None = None,
        caller: Caller | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        figures = self.figures
        requests = self._requests.get((status, output_format))
        if requests is None:
            requests = figures.requests.labels(str(status), output_format)
            self._requests[(status, output_format)] = requests
        requests.inc()
        seconds = self._seconds.get(lookup.cache)
        if seconds is None:
            seconds = self._seconds[lookup.cache] = figures.request_seconds.labels(lookup.cache)
        seconds.observe(duration_s)
        if lookup.cache == "hit":
            figures.cache_hits.inc()
        elif lookup.cache != "none":
            figures.cache_misses.inc()
        if self._log is not None:
            shown = path[:_MAX_LOGGED_PATH]
            fields: dict[str, object] = {
                "event": "request",
                "method": method,
                "path": shown,
                "status": status,
                "bytes": body_bytes,
                "duration_ms": round(duration_s * 1000, 2),
                "cache": lookup.cache,
                "coalesced": lookup.coalesced,
            }
            if caller is not None:
                fields["client"] = caller.client
                fields["request_id"] = caller.request_id
            if headers is not None:
                fields["user_agent"] = headers.get("User-Agent", "")[:_MAX_LOGGED_HEADER]
                fields["referer"] = headers.get("Referer", "")[:_MAX_LOGGED_HEADER]
            if error is not None:
                fields["error"] = error
            self._log.add(f"{method} {shown} {status}", fields)


# What Tornado logs (tornado.general, INFO) when it refuses a request itself: a
# malformed request line or headers get its own 400, before any handler.
_TORNADO_MALFORMED = "Malformed HTTP message from %s: %s"


class MalformedRequests(logging.Filter):
    """Requests Tornado refuses itself are counted and get a request line like any
    other (Tornado says so only in its log). A filter on Tornado's logger, which
    then passes on only what the configured log level wants."""

    def __init__(self, accounting: Accounting, level: int) -> None:
        super().__init__()
        self._accounting = accounting
        self._level = level

    @classmethod
    def install(cls, accounting: Accounting) -> MalformedRequests:
        logger = logging.getLogger("tornado.general")
        installed = cls(accounting, logger.getEffectiveLevel())
        logger.addFilter(installed)
        logger.setLevel(min(logger.getEffectiveLevel(), logging.INFO))
        return installed

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == _TORNADO_MALFORMED and isinstance(record.args, tuple):
            peer, why = record.args
            caller = Caller(str(peer), "")
            error = f"malformed request: {why}"
            self._accounting.answered("-", "-", 400, 0, 0.0, REFUSED, "none", error, caller)
        return record.levelno >= self._level
