"""Free loopback ports, never one handed out twice in a test run."""

from __future__ import annotations

import socket


def free_port_below(limit: int) -> int:
    """A free port whose gRPC twin (port + 10000, SeaweedFS' rule) is in range and free too
    (a twin in use made SeaweedFS exit at start: "bind: address already in use")."""
    while True:
        port = free_port()
        if port < limit and _is_free(port + 10_000):
            return port


def _is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A free port of loopback, never one handed out before in this process: two
    picks in a row may get the same port from the kernel (the storage cluster's
    gateway once could not bind for it)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
