"""SSRF: the fetcher never connects to a refused address, however it is reached.

Checked at the socket level: an audit hook records every connect() of this
process, and real listeners on the loopback addresses that can be listened
on record any connection that arrives.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from common import sources
from common.errors import SourceForbidden, SourceUnavailable
from common.settings import Settings
from processor.fetch import SourceFetcher, resolve
from tests.support.images import photo
from tests.support.origin import Origin
from tests.support.ports import free_port
from tests.support.settings import configured

_connects: list[Any] = []


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event == "socket.connect":
        _connects.append(args[1])


sys.addaudithook(_audit)

NAMES = {
    "loopback.test": "127.0.0.2",
    "private.test": "10.0.0.1",
    "cgnat.test": "100.64.0.1",
    "linklocal.test": "169.254.169.254",
    "multicast.test": "224.0.0.1",
    "unspecified.test": "0.0.0.0",
    "ipv6-loopback.test": "::1",
    "mapped.test": "::ffff:127.0.0.2",
    "sixtofour.test": "2002:7f00:2::",
    "nat64.test": "64:ff9b::7f00:2",
    "teredo.test": "2001:0:4136:e378:8000:63bf:3fff:fdd2",
}


def table_resolver(host: str, port: int) -> list[Any]:
    """Names of the test domain resolve from the table; others (IP literals) as usual."""
    if host == "half-private.test":  # one good address is not enough
        return [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("10.0.0.1")]
    if host in NAMES:
        return [ipaddress.ip_address(NAMES[host])]
    return resolve(host, port)


class Listener:
    def __init__(self, address: str, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((address, port))
        self.sock.listen()
        self.sock.setblocking(False)

    def connections(self) -> int:
        count = 0
        while True:
            try:
                conn, _ = self.sock.accept()
            except BlockingIOError:
                return count
            conn.close()
            count += 1


@pytest.fixture
def trap() -> Iterator[tuple[int, list[Listener]]]:
    """Listeners where a refused fetch would land: 127.0.0.2:P and 0.0.0.0:P."""
    port = free_port()
    listeners = [Listener("127.0.0.2", port)]
    unspecified_port = free_port()
    listeners.append(Listener("0.0.0.0", unspecified_port))
    yield port, listeners
    for listener in listeners:
        listener.sock.close()


def settings_for(origin: Origin, **overrides: Any) -> Settings:
    return configured(
        **{"source_domain": origin.url(""), "allowed_private_networks": ["127.0.0.1/32"]},
        **overrides,
    )


def literal_urls(port: int) -> list[str]:
    return [
        f"http://127.0.0.2:{port}/x.jpg",
        f"http://[::ffff:127.0.0.2]:{port}/x.jpg",
        f"http://[::1]:{port}/x.jpg",
        "http://10.0.0.1/x.jpg",
        "http://192.168.0.1/x.jpg",
        "http://172.16.5.4/x.jpg",
        "http://169.254.169.254/latest/meta-data/",
        "http://100.64.0.1/x.jpg",
        "http://224.0.0.1/x.jpg",
        "http://[::]/x.jpg",
        "http://[fe80::1]/x.jpg",
        "http://[fc00::1]/x.jpg",
        "http://[2002:7f00:2::]/x.jpg",
        "http://[64:ff9b::7f00:2]/x.jpg",
        "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/x.jpg",
    ]


def refused_urls(port: int, unspecified_port: int) -> list[str]:
    return [
        *literal_urls(port),
        f"http://0.0.0.0:{unspecified_port}/x.jpg",
        *[f"http://{name}:{port}/x.jpg" for name in NAMES],
        f"http://half-private.test:{port}/x.jpg",
    ]


def hosts_of(urls: list[str]) -> list[str]:
    """Put every host on the allow-list, so that only the address checks can refuse."""
    return [sources.host_of(url) for url in urls]


def ports_of(urls: list[str]) -> list[int]:
    """Allow every port, so that only the address checks can refuse."""
    return sorted({sources.port_of(url) for url in urls})


def test_refused_addresses_are_never_connected_to(
    origin: Origin, trap: tuple[int, list[Listener]]
) -> None:
    port, listeners = trap
    urls = refused_urls(port, listeners[1].sock.getsockname()[1])
    allowed = {"allowed_sources": hosts_of(urls), "allowed_source_ports": ports_of(urls)}
    fetcher = SourceFetcher(settings_for(origin, **allowed), table_resolver)
    _connects.clear()
    for url in urls:
        with pytest.raises(SourceForbidden, match="resolves to|is not allowed"):
            fetcher.fetch(url)
    assert _connects == []
    assert [listener.connections() for listener in listeners] == [0, 0]


def test_redirects_to_refused_addresses_are_never_followed(
    origin: Origin, trap: tuple[int, list[Listener]]
) -> None:
    port, listeners = trap
    targets = refused_urls(port, listeners[1].sock.getsockname()[1])
    allowed = {"allowed_sources": hosts_of(targets), "allowed_source_ports": ports_of(targets)}
    fetcher = SourceFetcher(settings_for(origin, **allowed), table_resolver)
    for index, target in enumerate(targets):
        redirect = origin.add(
            f"ssrf/redirect/{index}", b"", status=302, headers={"Location": target}
        )
        _connects.clear()
        with pytest.raises(SourceForbidden):
            fetcher.fetch(redirect)
        # The only connection made was to the allowed origin.
        assert {address[0] for address in _connects} <= {"127.0.0.1"}, target
    assert [listener.connections() for listener in listeners] == [0, 0]


def test_redirects_to_hosts_off_the_allow_list_are_refused(origin: Origin) -> None:
    fetcher = SourceFetcher(settings_for(origin), table_resolver)
    redirect = origin.add(
        "ssrf/offlist", b"", status=302, headers={"Location": "http://elsewhere.example/x.jpg"}
    )
    with pytest.raises(SourceForbidden, match="not allowed"):
        fetcher.fetch(redirect)


def test_allowed_redirects_are_followed_up_to_the_limit(origin: Origin) -> None:
    fetcher = SourceFetcher(settings_for(origin, max_source_redirects=2), table_resolver)
    final = origin.add("ssrf/final.jpg", photo())
    one = origin.add("ssrf/hop1", b"", status=301, headers={"Location": final})
    two = origin.add("ssrf/hop2", b"", status=302, headers={"Location": "/ssrf/hop1"})
    three = origin.add("ssrf/hop3", b"", status=307, headers={"Location": two})
    assert fetcher.fetch(one) == photo()
    assert fetcher.fetch(two) == photo()
    with pytest.raises(SourceUnavailable, match="redirects"):
        fetcher.fetch(three)


def test_the_checked_address_is_the_one_connected_to(origin: Origin) -> None:
    """A name is resolved once: the connection goes to the address that was checked."""
    calls: list[str] = []

    def counting_resolver(host: str, port: int) -> list[Any]:
        calls.append(host)
        return [ipaddress.ip_address("127.0.0.1")]

    fetcher = SourceFetcher(
        settings_for(origin, allowed_sources=["origin.test"]), counting_resolver
    )
    origin.add("ssrf/pinned.jpg", photo())
    _connects.clear()
    assert fetcher.fetch(f"http://origin.test:{origin.port}/ssrf/pinned.jpg") == photo()
    assert calls == ["origin.test"]
    assert [address[0] for address in _connects] == ["127.0.0.1"]
