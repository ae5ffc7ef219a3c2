"""A real HTTP origin on a loopback port, in a thread of the test process."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import threading
from typing import Any

import tornado.http1connection
import tornado.httpserver
import tornado.iostream
import tornado.netutil
import tornado.web


@dataclasses.dataclass
class Route:
    body: bytes
    status: int = 200
    content_type: str = "image/jpeg"
    delay_first_s: float = 0.0  # the first request waits this long, later ones do not
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    # Headers (with the full Content-Length) at once, then one byte per interval.
    trickle_interval_s: float = 0.0
    # HTTP/1.0 style: no Content-Length, the body ends when the connection closes.
    close_delimited: bool = False


class _OriginHandler(tornado.web.RequestHandler):
    def initialize(self, origin: Origin) -> None:
        self.origin = origin

    async def get(self, path: str) -> None:
        self.origin.hits[path] += 1
        route = self.origin.routes.get(path)
        if route is None:
            self.set_status(404)
            self.finish("no such original")
            return
        if route.delay_first_s and self.origin.hits[path] == 1:
            self.origin.started[path].set()
            await asyncio.sleep(route.delay_first_s)
        if route.close_delimited:
            await self._close_delimited(route)
            return
        if route.trickle_interval_s:
            await self._trickle(path, route)
            return
        self.set_status(route.status)
        self.set_header("Content-Type", route.content_type)
        for name, value in route.headers.items():
            self.set_header(name, value)
        self.finish(route.body)

    async def _close_delimited(self, route: Route) -> None:
        connection = self.request.connection
        assert isinstance(connection, tornado.http1connection.HTTP1Connection)
        stream = connection.detach()
        head = f"HTTP/1.1 {route.status} OK\r\nContent-Type: {route.content_type}\r\n"
        await stream.write(head.encode() + b"Connection: close\r\n\r\n" + route.body)
        stream.close()

    async def _trickle(self, path: str, route: Route) -> None:
        self.set_status(route.status)
        self.set_header("Content-Type", route.content_type)
        self.set_header("Content-Length", str(len(route.body)))
        self.origin.started[path].set()
        connection = self.request.connection
        assert isinstance(connection, tornado.http1connection.HTTP1Connection)
        for index in range(len(route.body)):
            if connection.stream.closed():
                return
            self.write(route.body[index : index + 1])
            try:
                await self.flush()
            except tornado.iostream.StreamClosedError:
                return
            await asyncio.sleep(route.trickle_interval_s)
        self.finish()


class Origin:
    """A real HTTP origin on a loopback port, in a thread of the test process."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.hits: collections.Counter[str] = collections.Counter()
        self.started: collections.defaultdict[str, threading.Event] = collections.defaultdict(
            threading.Event
        )
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def add(self, path: str, body: bytes, **kwargs: Any) -> str:
        """Serve `body` at `path` (no leading slash); returns its URL."""
        self.routes[path] = Route(body, **kwargs)
        return self.url(path)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
        self.port = sockets[0].getsockname()[1]
        app = tornado.web.Application([(r"/(.*)", _OriginHandler, {"origin": self})])
        server = tornado.httpserver.HTTPServer(app)
        server.add_sockets(sockets)
        self._ready.set()
        self._loop.run_forever()
        server.stop()
        self._loop.run_until_complete(server.close_all_connections())
        self._loop.close()

    def stop(self) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
