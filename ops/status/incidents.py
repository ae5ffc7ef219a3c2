"""What an operator on call reads first: the latest failed requests (from the
frontends' request logs) and the uploader's view of object storage (its /health).
Read by the status server's sampler, never by a request."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from common.settings import Settings

RECENT_FAILURES = 20
_TAIL_BYTES = 128 * 1024  # of each request log: its last few hundred lines
_FIELDS = ("ts", "status", "method", "path", "error", "client", "request_id")


def recent_failures(settings: Settings) -> list[dict[str, Any]]:
    """The newest answers with a status of 400 or more, newest first."""
    failed = []
    for path in settings.access_log_dir.glob("access_frontend_*.log"):
        for line in _tail(path).splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # the first, cut line of the tail
            if isinstance(entry, dict) and int(entry.get("status") or 0) >= 400:
                failed.append({field: entry.get(field) for field in _FIELDS})
    failed.sort(key=lambda entry: str(entry["ts"]), reverse=True)
    return failed[:RECENT_FAILURES]


def _tail(path: Path) -> str:
    try:
        with open(path, "rb") as file:
            file.seek(max(0, file.seek(0, 2) - _TAIL_BYTES))
            return file.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""


def storage_health(settings: Settings) -> dict[str, Any]:
    """The uploader's /health: object storage reachable, its last problem, the backlog."""
    host = settings.status_bind_address
    host = "127.0.0.1" if host in ("0.0.0.0", "") else host
    url = f"http://{host}:{settings.uploader_health_port}/health"
    try:
        with urllib.request.urlopen(url, timeout=1) as answer:
            body = answer.read()
    except urllib.error.HTTPError as exc:  # 503: unhealthy, and says why
        body = exc.read()
    except (OSError, urllib.error.URLError):
        return {"uploader_answers": False}
    try:
        report: dict[str, Any] = json.loads(body)
    except ValueError:
        return {"uploader_answers": False}
    return {"uploader_answers": True, **report}
