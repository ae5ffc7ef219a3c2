"""A frontend that stops answers the connections the kernel had already queued
for it: closing a listening socket would reset them (their clients were
promised an answer: the handshake was done)."""

from __future__ import annotations

import asyncio
import socket

import tornado.httpserver
import tornado.netutil
import tornado.web

from frontend.__main__ import drain
from tests.support.ports import free_port


class _Hello(tornado.web.RequestHandler):
    def get(self) -> None:
        self.write("hello")


class _NothingInFlight:
    """What drain() asks of the service: no request of the service in hand."""

    active_requests = 0


async def _queued_then_drained(port: int, clients: int) -> list[bytes]:
    server = tornado.httpserver.HTTPServer(tornado.web.Application([("/", _Hello)]))
    server.add_sockets(tornado.netutil.bind_sockets(port, "127.0.0.1"))
    connected = []
    for _ in range(clients):  # the loop does not run: each waits in the listen queue
        client = socket.create_connection(("127.0.0.1", port), timeout=10)
        client.sendall(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
        connected.append(client)
    await drain(server, _NothingInFlight(), timeout_s=10)  # type: ignore[arg-type]
    answers = []
    for client in connected:
        with client:
            try:
                answers.append(client.recv(4096))
            except ConnectionResetError:
                answers.append(b"reset")
    return answers


def test_connections_queued_when_the_frontend_stops_are_answered() -> None:
    answers = asyncio.run(_queued_then_drained(free_port(), clients=5))
    assert len(answers) == 5
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 200 OK"), answer
        assert answer.endswith(b"hello")
