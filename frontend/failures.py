"""Outputs that failed for good, remembered for a while: a repeat costs nothing.

An original above the limits (413), one that is not an image (415), or a
render that ran past its deadline fail the same way every time; without this,
each repeat of such a request costs a download, a decode or a whole timeout.
A request that timed out is held too: asked again, it would only queue
another job behind the one still running; the late result (frontend/rpc.py)
ends the hold. Kept per frontend process (a host with N frontends repeats one at most N times
per `failure_memory_s`), bounded in entries.
"""

from __future__ import annotations

import time

from common.errors import ImageServerError

_MAX_ENTRIES = 10_000


class FailureMemory:
    def __init__(self, memory_s: float) -> None:
        self._memory_s = memory_s
        self._failed: dict[str, tuple[float, ImageServerError]] = {}  # key -> (until, error)

    def remember(self, key: str, error: ImageServerError) -> None:
        """Remember a failure that would happen again (error.deterministic)."""
        if error.deterministic:
            self.hold(key, error)

    def hold(self, key: str, error: ImageServerError) -> None:
        """Answer `key` with `error` for failure_memory_s, whatever the error (a
        timeout: until the late result says otherwise, see forget)."""
        if not self._memory_s:
            return
        if len(self._failed) >= _MAX_ENTRIES:  # the oldest half goes
            for old in list(self._failed)[: _MAX_ENTRIES // 2]:
                del self._failed[old]
        self._failed[key] = (time.monotonic() + self._memory_s, error)

    def raise_if_failed(self, key: str) -> None:
        """Raise the error `key` failed with, if it is remembered still."""
        entry = self._failed.get(key)
        if entry is None:
            return
        until, error = entry
        if time.monotonic() > until:
            del self._failed[key]
            return
        raise type(error)(error.message)

    def forget(self, prefix: str) -> None:
        """Forget the failures of keys under `prefix` (the image was purged)."""
        for key in [key for key in self._failed if key.startswith(prefix)]:
            del self._failed[key]
