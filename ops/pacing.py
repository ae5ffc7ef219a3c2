"""Background work paced to a share of a core, which stops when the program is asked to.

A walk of a whole cache (the janitor's rebuild of an index, the move of an
earlier layout) may take minutes: it must leave the host's requests their
CPU, and a `supervisorctl stop` must not wait for its end.
"""

from __future__ import annotations

import threading
import time

BATCH = 1000  # items between two pauses


class Stopped(Exception):
    """The program was asked to stop during paced work (it resumes at the next start)."""


class Pace:
    def __init__(self, busy_share: float, stop: threading.Event | None = None) -> None:
        self._busy_share = busy_share
        self._stop = stop or threading.Event()
        self._done = 0
        self._started = time.thread_time()

    def step(self) -> None:
        """One item done: after each batch, pause for as long as keeps this thread's
        CPU (the work, and whatever its caller does between two items) under
        `busy_share` of a core. Raises Stopped once the stop event is set."""
        self._done += 1
        if self._done % BATCH:
            return
        pause_s = (time.thread_time() - self._started) * (1 / self._busy_share - 1)
        if self._stop.wait(pause_s):
            raise Stopped()
        self._started = time.thread_time()
