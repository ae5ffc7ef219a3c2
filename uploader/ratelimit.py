"""Evenly spaced start times: at most `rate_per_s` starts in any second, whatever the backlog."""

from __future__ import annotations

import threading
import time


class RateLimiter:
    """Shared by the consumer of image.upload and the drain of uploads kept on disk."""

    def __init__(self, rate_per_s: float) -> None:
        self._interval_s = 1.0 / rate_per_s
        self._next_start = 0.0
        self._lock = threading.Lock()

    def reserve(self) -> float:
        """Reserve the next start slot; returns how many seconds to wait for it."""
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next_start)
            self._next_start = start + self._interval_s
            return start - now
