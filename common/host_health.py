"""The host's health verdict, as the status server last computed it, for anyone on the host.

The status server writes it to a small file after every sample; a frontend
answers `GET /health` on the public port from it (healthy or not, no detail):
a load balancer's check costs a stat and a read, whatever the status page
costs, and the status server's port can stay closed to the network. A verdict
older than a few sampling intervals counts as unhealthy (the sampler or the
status server is gone: nobody checks this host any more).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from common.files import write_atomic
from common.settings import Settings

HEALTH_FILE = "host-health.json"


def _path(settings: Settings) -> Path:
    return settings.metrics_dir / HEALTH_FILE


def stale_after_s(settings: Settings) -> float:
    return 5 * settings.status_interval_s + 5


def publish(settings: Settings, healthy: bool) -> None:
    verdict = {"healthy": healthy, "checked_epoch_s": round(time.time(), 3)}
    write_atomic(_path(settings), json.dumps(verdict).encode())


def healthy(settings: Settings) -> bool:
    """The last verdict, if recent: False when it is missing, stale or unhealthy."""
    try:
        verdict = json.loads(_path(settings).read_bytes())
    except (OSError, ValueError):
        return False
    fresh = time.time() - float(verdict.get("checked_epoch_s", 0)) < stale_after_s(settings)
    return fresh and verdict.get("healthy") is True
