"""Graphite events, received by a real plaintext-protocol TCP listener."""

from __future__ import annotations

import collections
import socket
import threading
import time
from collections.abc import Callable

from tests.support.images import photo
from tests.support.origin import Origin
from tests.support.stack import Stack
from tests.support.waiting import wait_until


class PlaintextListener:
    """Accepts carbon plaintext connections and keeps every metric line."""

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self.lines: list[str] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._read, args=(connection,), daemon=True).start()

    def _read(self, connection: socket.socket) -> None:
        with connection, connection.makefile("r") as stream:
            for line in stream:
                with self._lock:
                    self.lines.append(line.strip())

    def names(self) -> collections.Counter[str]:
        with self._lock:
            return collections.Counter(line.split()[0] for line in self.lines)

    def close(self) -> None:
        self._server.close()


def test_events_of_a_scripted_sequence(make_stack: Callable[..., Stack], origin: Origin) -> None:
    graphite = PlaintextListener()
    try:
        stack = make_stack(graphite_enabled=True, graphite_port=graphite.port)
        stack.start(processors=1)
        origin.add("graphite/events/1/original.jpg", photo())
        origin.add("graphite/events/2/original.jpg", b"<html>not an image</html>")

        assert stack.get("/graphite/events/1/w100.jpg").status == 200  # miss
        assert stack.get("/graphite/events/1/w100.jpg").status == 200  # hit
        assert stack.get("/graphite/events/404/w100.jpg").status == 404  # no original
        assert stack.get("/graphite/events/2/w100.jpg").status == 415  # failure

        expected = {
            "stats.image_server.image_request": 1,
            "stats.image_server.image_request.jpg": 1,
            "stats.image_server.original_downloaded": 2,  # the photo and the HTML page
            "stats.image_server.original_unavailable": 1,
            "stats.image_server.image_request_fail": 2,
        }
        wait_until(lambda: graphite.names() == expected, what=f"events {expected}")
        time.sleep(1.0)  # nothing more arrives late
        assert graphite.names() == expected
        assert all(line.split()[1] == "1.000000" for line in graphite.lines)
    finally:
        graphite.close()


def test_graphite_down_never_fails_a_request(
    make_stack: Callable[..., Stack], origin: Origin
) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        dead_port = unused.getsockname()[1]
    stack = make_stack(graphite_enabled=True, graphite_port=dead_port)
    stack.start(processors=1)
    origin.add("graphite/down/1/original.jpg", photo())
    assert stack.get("/graphite/down/1/w100.jpg").status == 200
    assert stack.get("/graphite/down/9/w100.jpg").status == 404
    assert all(stack.alive().values())
