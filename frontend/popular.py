"""Which outputs each image type is asked for: request statistics shared by every frontend.

Each frontend process counts the outputs it answers (GET, 200 or 304) by
image type (`<model>/<imageType>`) and output name (`x300.jpg`). Every
stats_interval_s, on a thread, it saves its own totals to object storage
as `<storage_key_prefix>/.stats/<host>-frontend_<N>.json` and reads every
frontend's file to sum them. Why there: object storage is already shared by
every host and outlives every process, and one writer per object needs no
locking; a restarted frontend reads its file back and keeps counting. The
cost is one put, one list and one get per frontend of the cluster, per
frontend, per interval: fine for tens of frontends.

Background work (popular outputs, POST pre-generation) never passes through
`count`, so it never counts towards the statistics.
"""

from __future__ import annotations

import collections
import json
import logging
import socket
import threading

from common.errors import ImageServerError
from common.settings import Settings
from common.storage import ObjectStore
from common.urls import ImageRequest

log = logging.getLogger(__name__)
STATS_DIR = ".stats"  # no model of the URL grammar has a dot


class Popularity:
    def __init__(self, settings: Settings, store: ObjectStore, process_num: int) -> None:
        self._settings = settings
        self._store = store
        self._prefix = f"{settings.storage_key_prefix}/{STATS_DIR}/"
        self._own_key = f"{self._prefix}{socket.gethostname()}-frontend_{process_num}.json"
        self._lock = threading.Lock()
        self._counts: dict[str, collections.Counter[str]] = {}
        self._loaded = False  # our saved totals, read back before the first save
        self._popular: dict[str, list[str]] = {}

    def count(self, request: ImageRequest) -> None:
        """A request answered with its output (on the event loop: a dict update)."""
        with self._lock:
            counts = self._counts.setdefault(request.image.kind, collections.Counter())
            counts[request.output_name] += 1

    def popular(self, kind: str) -> list[str]:
        """The popular output names of image type `kind`, most asked first."""
        return self._popular.get(kind, [])

    def sync(self) -> None:
        """Save our totals, read everyone's, recompute the popular outputs (a thread)."""
        try:
            if not self._loaded:
                self._merge_saved()
            with self._lock:
                mine = {kind: dict(counts) for kind, counts in self._counts.items()}
            self._store.put(self._own_key, json.dumps(mine).encode(), "application/json")
            everyone = self._read_all()
        except ImageServerError as exc:
            log.warning("request statistics not synced: %s", exc.message)
            return
        popular = {kind: self._choose(counts) for kind, counts in everyone.items()}
        popular = {kind: names for kind, names in popular.items() if names}
        if popular != self._popular:
            log.info(
                "popular outputs: %s", json.dumps(popular), extra={"fields": {"event": "popular"}}
            )
        self._popular = popular

    def _merge_saved(self) -> None:
        saved = self._store.get(self._own_key)
        with self._lock:
            for kind, counts in _decode(saved).items():
                self._counts.setdefault(kind, collections.Counter()).update(counts)
        self._loaded = True

    def _read_all(self) -> dict[str, collections.Counter[str]]:
        total: dict[str, collections.Counter[str]] = {}
        for key in self._store.keys(self._prefix):
            for kind, counts in _decode(self._store.get(key)).items():
                total.setdefault(kind, collections.Counter()).update(counts)
        return total

    def _choose(self, counts: collections.Counter[str]) -> list[str]:
        settings = self._settings
        requests = sum(counts.values())
        if requests < settings.popular_min_requests:
            return []
        return [
            name
            for name, count in counts.most_common(settings.popular_outputs_max)
            if count / requests >= settings.popular_min_share
        ]


def _decode(data: bytes | None) -> dict[str, dict[str, int]]:
    if data is None:
        return {}
    try:
        decoded = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        log.warning("ignoring an unreadable statistics file")
        return {}
    if not isinstance(decoded, dict):
        return {}
    return {
        str(kind): {str(name): int(n) for name, n in counts.items() if isinstance(n, int)}
        for kind, counts in decoded.items()
        if isinstance(counts, dict)
    }
