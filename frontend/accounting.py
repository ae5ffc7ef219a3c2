"""Where an answered image request is counted (Prometheus) and logged (one JSON line).

Both request paths end here: plain cache hits answered below Tornado's web
layer (frontend/hits.py) and everything the Application answers.
"""

from __future__ import annotations

import dataclasses
import logging

from common.config import Settings
from common.metrics import FrontendFigures

access_log = logging.getLogger("access")
_MAX_LOGGED_PATH = 2048  # a hostile path of any length must not make a huge line


@dataclasses.dataclass(frozen=True)
class Lookup:
    """Where a request's output came from."""

    cache: str  # hit (local cache), store (object storage), miss (resized), none (refused first)
    coalesced: bool = False  # waited on a resize another request had started


HIT = Lookup("hit")
REFUSED = Lookup("none")


class Accounting:
    def __init__(self, settings: Settings, figures: FrontendFigures) -> None:
        self._log = settings.access_log
        self.figures = figures

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
    ) -> None:
        figures = self.figures
        figures.requests.labels(str(status), output_format).inc()
        figures.request_seconds.labels(lookup.cache).observe(duration_s)
        if lookup.cache == "hit":
            figures.cache_hits.inc()
        elif lookup.cache != "none":
            figures.cache_misses.inc()
        if self._log:
            fields = {
                "event": "request",
                "method": method,
                "path": path[:_MAX_LOGGED_PATH],
                "status": status,
                "bytes": body_bytes,
                "duration_ms": round(duration_s * 1000, 2),
                "cache": lookup.cache,
                "coalesced": lookup.coalesced,
            }
            if error is not None:
                fields["error"] = error
            access_log.info("%s %s %d", method, fields["path"], status, extra={"fields": fields})
