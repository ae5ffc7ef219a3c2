"""Steady load on a stack for the fault tests: clients asking in loops until stopped,
misses (a new output each time, never asked before) and hits (outputs made before),
every answer recorded with its time."""

from __future__ import annotations

import dataclasses
import itertools
import threading
import time

from tests.support.images import photo
from tests.support.origin import Origin
from tests.support.stack import Stack

IMAGES = 40  # 36,000 new outputs (40 images, 100-999 px wide): misses stay misses
TIMEOUT_S = 60.0


@dataclasses.dataclass(frozen=True)
class Answer:
    kind: str  # "miss" or "hit"
    path: str
    status: int  # 0: no answer at all
    started: float  # time.monotonic()
    ended: float


class Load:
    def __init__(
        self, stack: Stack, origin: Origin, prefix: str, misses: int = 3, hits: int = 2
    ) -> None:
        self.stack = stack
        self.prefix = prefix
        for index in range(IMAGES):
            origin.add(f"{prefix}/{index}/original.jpg", photo())
        self.hits = [f"/{prefix}/{index}/x80.jpg" for index in range(IMAGES)]
        self.answers: list[Answer] = []
        self._widths = itertools.count()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._client, args=(kind,), daemon=True)
            for kind in ["miss"] * misses + ["hit"] * hits
        ]

    def make_hits(self) -> list[int]:
        """Ask every output the hit clients will ask (before the load); their statuses."""
        return [self.stack.get(path).status for path in self.hits]

    def _next_path(self, kind: str, turn: int) -> str:
        if kind == "hit":
            return self.hits[turn % len(self.hits)]
        with self._lock:
            width = next(self._widths)
        return f"/{self.prefix}/{width % IMAGES}/w{100 + (width // IMAGES) % 900}.jpg"

    def _client(self, kind: str) -> None:
        for turn in itertools.count():
            if self._stop.is_set():
                return
            path = self._next_path(kind, turn)
            started = time.monotonic()
            try:
                status = self.stack.get(path, timeout=TIMEOUT_S).status
            except Exception:  # noqa: BLE001 - no answer at all is recorded as such
                status = 0
            with self._lock:
                self.answers.append(Answer(kind, path, status, started, time.monotonic()))

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(TIMEOUT_S + 10)

    def since(self, moment: float) -> list[Answer]:
        with self._lock:
            return [answer for answer in self.answers if answer.started >= moment]

    def outputs_answered(self) -> set[str]:
        """Cache keys of every output answered 200."""
        with self._lock:
            return {a.path.lstrip("/") for a in self.answers if a.status == 200}
