"""Sources that are down are left alone: what a processor remembers of its origins.

- A URL that answered 404 or 410 is not asked again for `source_not_found_ttl_s`.
- An origin (scheme, host and port) whose downloads fail `source_failures_to_open`
  times in a row (connect errors, timeouts, 5xx: what a retry a moment later
  would meet again) is paused for `source_pause_s`: its downloads fail at once
  (503) instead of each costing a connect attempt or a timeout. Then one download
  tries it (half-open): success closes the breaker, failure pauses it again.
  The fetcher keeps requests' own `source=` URLs apart from the configured
  origin's (processor/fetch.py): a client cannot pause the site's origin.

Per processor process, shared by its job threads.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Iterator

from common.errors import (
    ImageServerError,
    SourceBusy,
    SourceHostPaused,
    SourceNotFoundRecently,
    SourceTimeout,
    SourceUnavailable,
)

log = logging.getLogger(__name__)
_MAX_REMEMBERED = 10_000


class NotFoundMemory:
    def __init__(self, ttl_s: float) -> None:
        self._ttl_s = ttl_s
        self._until: dict[str, float] = {}
        self._lock = threading.Lock()

    def remember(self, url: str) -> None:
        if not self._ttl_s:
            return
        with self._lock:
            if len(self._until) >= _MAX_REMEMBERED:
                for old in list(self._until)[: _MAX_REMEMBERED // 2]:
                    del self._until[old]
            self._until[url] = time.monotonic() + self._ttl_s

    def check(self, url: str) -> None:
        """Raise SourceNotFoundRecently while `url`'s 404 is remembered."""
        with self._lock:
            until = self._until.get(url)
            if until is None:
                return
            if time.monotonic() > until:
                del self._until[url]
                return
        raise SourceNotFoundRecently(
            f"the source answered 404 or 410 less than {self._ttl_s:g} s ago "
            "(source_not_found_ttl_s)"
        )


@dataclasses.dataclass
class _Breaker:
    failures: int = 0  # in a row
    paused_until: float = 0.0
    trying: bool = False  # one download is trying the host after its pause


# What says a host is down (and not: a 404, an oversized or forbidden original).
_HOST_FAILURES = (SourceUnavailable, SourceTimeout)


class HostBreakers:
    def __init__(self, failures_to_open: int, pause_s: float) -> None:
        self._failures_to_open = failures_to_open
        self._pause_s = pause_s
        self._hosts: dict[str, _Breaker] = {}
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def guard(self, host: str) -> Iterator[None]:
        """Let a download from `host` run, unless the host is paused (SourceHostPaused);
        count how it ends: failed (down), answered (up, whatever it said), or neither
        (our own limit on downloads per host, a bug)."""
        trial = self._enter(host)
        outcome = "neither"
        try:
            yield
            outcome = "answered"
        except SourceBusy:
            raise
        except _HOST_FAILURES:
            outcome = "failed"
            raise
        except ImageServerError:
            outcome = "answered"
            raise
        finally:
            self._settle(host, trial, outcome)

    def _enter(self, host: str) -> bool:
        """True when this download is the one trying a host after its pause."""
        with self._lock:
            breaker = self._hosts.get(host)
            if breaker is None or breaker.failures < self._failures_to_open:
                return False
            if time.monotonic() < breaker.paused_until or breaker.trying:
                raise SourceHostPaused(
                    f"the source host {host!r} failed {breaker.failures} times in a row: "
                    f"not asked for {self._pause_s:g} s (source_pause_s)"
                )
            breaker.trying = True
            return True

    def _settle(self, host: str, trial: bool, outcome: str) -> None:
        with self._lock:
            breaker = self._hosts.setdefault(host, _Breaker())
            if trial:
                breaker.trying = False
            if outcome == "answered":
                del self._hosts[host]
                if breaker.failures >= self._failures_to_open:
                    log.warning("source host %s answers again: no longer paused", host)
            elif outcome == "failed":
                breaker.failures += 1
                if breaker.failures >= self._failures_to_open:
                    breaker.paused_until = time.monotonic() + self._pause_s
                    log.warning(
                        "source host %s paused for %g s after %d failures in a row",
                        host,
                        self._pause_s,
                        breaker.failures,
                    )
            elif not breaker.failures:
                del self._hosts[host]
