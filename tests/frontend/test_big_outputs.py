"""A big output asked by clients that do not read: memory stays put.

A cached output larger than what a frontend keeps in memory is mapped from
its file, not copied per request: 20 clients that ask for a 12 MB file and
read nothing cost the frontend a few MiB of its own memory (the file's pages
are the kernel's page cache, shared), where a copy per connection cost 20 x
12 MB.
"""

from __future__ import annotations

import select
import socket
from collections.abc import Callable
from pathlib import Path

import pyvips

from tests.support.images import decode
from tests.support.origin import Origin
from tests.support.stack import Stack
from tests.support.waiting import wait_until

CLIENTS = 20


def noise_png(side: int) -> bytes:
    """A PNG that does not compress: random pixels."""
    image = pyvips.Image.gaussnoise(side, side, sigma=80, mean=128).cast("uchar")
    rgb = image.bandjoin([image.rot90().flip("horizontal"), image.flip("vertical")])
    return bytes(rgb.copy(interpretation="srgb").pngsave_buffer(compression=1))


def anonymous_kib(pid: int) -> int:
    """The process' own memory (RssAnon: not the file pages it maps)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
    raise AssertionError("no RssAnon")


def test_clients_that_do_not_read_a_big_output_cost_no_copy_of_it(
    make_stack: Callable[..., Stack], origin: Origin
) -> None:
    stack = make_stack().start(processors=1)
    origin.add("big/img/1/original.jpg", noise_png(2000), content_type="image/png")
    first = stack.get("/big/img/1/full_size.png")  # made, cached, 12 MB
    assert first.status == 200 and decode(first.data).width == 2000
    size = len(first.data)
    assert size > 10_000_000
    assert stack.get("/big/img/1/full_size.png").data == first.data  # served from the cache
    # The same through the web layer (a query string skips the cache-hit path).
    assert stack.get("/big/img/1/full_size.png?v=2").data == first.data
    head = stack.get("/big/img/1/full_size.png", method="HEAD")
    assert head.status == 200 and int(head.headers["Content-Length"]) == size and not head.data
    frontend = stack.processes["frontend_0"].pid
    before = anonymous_kib(frontend)
    clients = non_reading_clients(stack, "/big/img/1/full_size.png", CLIENTS)
    grown_mib = (anonymous_kib(frontend) - before) / 1024
    for client in clients:
        client.close()
    # A copy each would be CLIENTS x 12 MB = 240 MB; the mapped file costs nothing of its own.
    assert grown_mib < 0.2 * CLIENTS * size / 2**20, f"the frontend grew by {grown_mib:.0f} MiB"


def non_reading_clients(stack: Stack, path: str, count: int) -> list[socket.socket]:
    """`count` connections that ask `path` and read nothing, once every answer has
    begun (its first bytes wait in each client's buffer)."""
    clients = []
    for _ in range(count):
        client = socket.create_connection(("127.0.0.1", stack.config["server_port"]))
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
        clients.append(client)

    def begun() -> bool:
        readable, _, _ = select.select(clients, [], [], 0)
        return len(readable) == count

    wait_until(begun, 60, "every answer begun")
    return clients


def test_clients_that_do_not_read_a_fresh_output_cost_no_copy_and_are_cut_off(
    make_stack: Callable[..., Stack], origin: Origin
) -> None:
    """A miss's answer was held whole per slow reader, with no timeout: 16 clients
    that never read a fresh 8.5 MB output grew the frontends by 147 MB."""
    stack = make_stack(send_timeout_s=3.0).start(processors=1)
    origin.add("big/img/2/original.jpg", noise_png(1700), content_type="image/png")
    frontend = stack.processes["frontend_0"].pid
    before = anonymous_kib(frontend)
    clients = non_reading_clients(stack, "/big/img/2/full_size.png", 16)  # one resize
    grown_mib = (anonymous_kib(frontend) - before) / 1024
    assert grown_mib < 30, f"the frontend grew by {grown_mib:.0f} MiB"
    # Reading nothing for send_timeout_s, each connection is closed by the frontend
    # (its end leaves ESTABLISHED, its FIN queued behind what the client left unread).
    ports = {client.getsockname()[1] for client in clients}
    wait_until(lambda: not ports & established_peers(stack.config["server_port"]), 30,
               "every non-reading client cut off")  # fmt: skip
    for client in clients:
        client.close()
    assert stack.get("/big/img/2/full_size.png").status == 200  # the frontend serves on


def established_peers(server_port: int) -> set[int]:
    """The client ports of the server's ESTABLISHED connections (/proc/net/tcp)."""
    peers = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port = int(fields[1].split(":")[1], 16)
        if local_port == server_port and fields[3] == "01":  # TCP_ESTABLISHED
            peers.add(int(fields[2].split(":")[1], 16))
    return peers
