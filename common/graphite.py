"""Graphite events, sent from a background thread: never blocks or fails a request.

Events are counts of 1 (`stats.image_server.<name> 1 <timestamp>`), the
names of the original service. When Graphite is down, events are dropped
and a reconnect is tried again after a pause.
"""

from __future__ import annotations

import logging
import queue
import threading
import time

import graphitesend

from common.settings import Settings

log = logging.getLogger(__name__)
_MAX_PENDING = 10_000
_RECONNECT_PAUSE_S = 5.0

IMAGE_REQUEST = "image_request"
IMAGE_REQUEST_FAIL = "image_request_fail"
ORIGINAL_DOWNLOADED = "original_downloaded"
ORIGINAL_UNAVAILABLE = "original_unavailable"


class Graphite:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._pending: queue.Queue[tuple[str, int]] = queue.Queue(_MAX_PENDING)
        if settings.graphite_enabled:
            threading.Thread(target=self._send_forever, name="graphite", daemon=True).start()

    def event(self, name: str) -> None:
        if not self._settings.graphite_enabled:
            return
        try:
            self._pending.put_nowait((name, int(time.time())))
        except queue.Full:
            pass  # Graphite is far behind: losing a count beats slowing a request

    def _connect(self) -> graphitesend.GraphiteClient:
        return graphitesend.GraphiteClient(
            prefix=self._settings.graphite_prefix,
            system_name="",
            graphite_server=self._settings.graphite_host,
            graphite_port=self._settings.graphite_port,
            timeout_in_seconds=1,
        )

    def _send_forever(self) -> None:
        client: graphitesend.GraphiteClient | None = None
        retry_at = 0.0
        while True:
            name, timestamp = self._pending.get()
            if client is None and time.monotonic() < retry_at:
                continue  # dropped: Graphite was down a moment ago
            try:
                if client is None:
                    client = self._connect()
                client.send(name, 1, timestamp)
            except (graphitesend.GraphiteSendException, OSError) as exc:
                log.warning("graphite unavailable, dropping events for a while: %s", exc)
                client = None
                retry_at = time.monotonic() + _RECONNECT_PAUSE_S
