"""Fetching an original over HTTP without becoming an SSRF door.

The fetcher resolves the host itself, refuses it unless every address it
resolves to is allowed (see common.sources), then connects to the address
it checked: there is no second lookup for a rebinding DNS server to answer
differently. Redirects are followed by hand, each one checked again (host
allow-list and addresses), at most max_source_redirects of them.
"""

from __future__ import annotations

import collections
import contextlib
import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from urllib.parse import urljoin, urlsplit

import certifi
import urllib3

from common import sources
from common.errors import (
    SourceBusy,
    SourceForbidden,
    SourceNotFound,
    SourceTimeout,
    SourceTooLarge,
    SourceUnavailable,
)
from common.settings import Settings
from processor.source_health import HostBreakers, NotFoundMemory

log = logging.getLogger(__name__)
_CHUNK_BYTES = 256 * 1024
_REDIRECTS = (301, 302, 303, 307, 308)
_MAX_POOLS = 64
_POOL_CONNECTIONS = 4  # idle connections kept per pool; more may be open at once

Resolver = Callable[[str, int], list[sources.IPAddress]]


def resolve(host: str, port: int) -> list[sources.IPAddress]:
    """Every address `host` resolves to (an IP literal resolves to itself)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise SourceUnavailable(f"cannot resolve {host!r}") from exc
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]


class SourceFetcher:
    def __init__(self, settings: Settings, resolver: Resolver = resolve) -> None:
        self._max_bytes = settings.max_source_bytes
        self._max_redirects = settings.max_source_redirects
        self._allowed_hosts = sources.allowed_hosts(settings)
        self._allowed_ports = sources.allowed_ports(settings)
        self._not_found = NotFoundMemory(settings.source_not_found_ttl_s)
        # A request's own `source=` URLs fail and wait apart from the configured
        # origin's downloads (keyed by `explicit`): they can pause or fill only each other.
        self._breakers = {
            explicit: HostBreakers(settings.source_failures_to_open, settings.source_pause_s)
            for explicit in (False, True)
        }
        self._exempt = sources.exempt_networks(settings)
        self._resolve = resolver
        self._connect_timeout_s = settings.source_connect_timeout_s
        self._read_timeout_s = settings.source_read_timeout_s
        self._download_timeout_s = settings.source_download_timeout_s
        self._per_host = settings.max_downloads_per_source_host
        self._downloading: collections.Counter[tuple[str, bool]] = collections.Counter()
        self._lock = threading.Lock()  # fetch() is called from several job threads
        self._pools: dict[tuple[str, str, int, str], urllib3.HTTPConnectionPool] = {}

    def close(self) -> None:
        """Close every connection kept to a source."""
        with self._lock:
            pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.close()

    def fetch(self, url: str, deadline: float | None = None, explicit: bool = False) -> bytes:
        """The body of `url`, following checked redirects; raises an ImageServerError.

        `deadline` (time.monotonic()) bounds the whole download, together with
        source_download_timeout_s from now, whichever comes first. `explicit`:
        the URL is a request's `source=`, not source_domain's template.
        """
        own = time.monotonic() + self._download_timeout_s
        deadline = own if deadline is None else min(deadline, own)
        origin = sources.origin_of(url)
        self._not_found.check(url)
        # Counted by the origin asked for; each hop is checked in _request.
        with self._breakers[explicit].guard(origin), self._slot(origin, explicit):
            try:
                return self._follow(url, deadline)
            except SourceNotFound:
                self._not_found.remember(url)
                raise

    def _follow(self, url: str, deadline: float) -> bytes:
        for _hop in range(self._max_redirects + 1):
            response = self._request(url, deadline)
            location = response.headers.get("Location")
            if response.status in _REDIRECTS and location:
                response.close()  # its body may be anything: do not read it
                url = urljoin(url, location)
                continue
            return self._body(response, deadline)
        raise SourceUnavailable(f"more than {self._max_redirects} redirects")

    @contextlib.contextmanager
    def _slot(self, origin: str, explicit: bool) -> Iterator[None]:
        key = (origin, explicit)
        with self._lock:
            if self._downloading[key] >= self._per_host:
                raise SourceBusy(
                    f"{self._per_host} downloads from {origin!r} are already in progress"
                )
            self._downloading[key] += 1
        try:
            yield
        finally:
            with self._lock:
                self._downloading[key] -= 1
                if not self._downloading[key]:
                    del self._downloading[key]

    def _timeout(self, deadline: float) -> urllib3.Timeout:
        remaining_s = deadline - time.monotonic()
        if remaining_s <= 0:
            raise SourceTimeout()
        return urllib3.Timeout(
            connect=min(self._connect_timeout_s, remaining_s),
            read=min(self._read_timeout_s, remaining_s),
        )

    def _request(self, url: str, deadline: float) -> urllib3.BaseHTTPResponse:
        sources.check_source_url(url, self._allowed_hosts, self._allowed_ports)
        parts = urlsplit(url)
        host = sources.normalise_host(parts.hostname or "")
        port = sources.port_of(url)
        address = self._checked_address(host, port)
        timeout = self._timeout(deadline)
        pool = self._pool(parts.scheme, address, port, host)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        try:
            return pool.urlopen(
                "GET",
                path,
                headers={"Host": parts.netloc.rpartition("@")[2], "User-Agent": "image-server"},
                redirect=False,
                retries=False,
                preload_content=False,
                assert_same_host=False,
                timeout=timeout,
            )
        except urllib3.exceptions.HTTPError as exc:
            if time.monotonic() >= deadline:
                raise SourceTimeout() from exc
            raise SourceUnavailable(f"cannot reach the source: {type(exc).__name__}") from exc

    def _checked_address(self, host: str, port: int) -> str:
        addresses = self._resolve(host, port)
        if not addresses:
            raise SourceUnavailable(f"{host!r} resolves to nothing")
        for address in addresses:
            refusal = sources.address_refusal(address, self._exempt)
            if refusal is not None:
                raise SourceForbidden(f"source host {host!r} resolves to {refusal}")
        return str(addresses[0])

    def _pool(self, scheme: str, address: str, port: int, host: str) -> urllib3.HTTPConnectionPool:
        key = (scheme, address, port, host)
        with self._lock:  # job threads share the pools
            pool = self._pools.get(key)
            if pool is None:
                if len(self._pools) >= _MAX_POOLS:
                    self._pools.pop(next(iter(self._pools))).close()
                pool = self._pools[key] = _new_pool(scheme, address, port, host)
        return pool

    def _body(self, response: urllib3.BaseHTTPResponse, deadline: float) -> bytes:
        try:
            if response.status in (404, 410):
                raise SourceNotFound(f"the source answered {response.status}")
            if response.status != 200:
                raise SourceUnavailable(f"the source answered {response.status}")
            data = self._read_capped(response, deadline)
        except BaseException:
            response.close()  # unread bytes may remain: never reuse this connection
            raise
        response.release_conn()
        return data

    def _read_capped(self, response: urllib3.BaseHTTPResponse, deadline: float) -> bytes:
        declared = response.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > self._max_bytes:
            raise SourceTooLarge()
        chunks, size = [], 0
        try:
            while True:
                # One socket read at a time, each waiting no longer than what is
                # left of the deadline: a source that trickles cannot stretch it.
                _limit_next_read(response, self._timeout(deadline))
                chunk = response.read1(_CHUNK_BYTES)
                if not chunk:
                    break
                size += len(chunk)
                if size > self._max_bytes:
                    raise SourceTooLarge()
                chunks.append(chunk)
        except urllib3.exceptions.HTTPError as exc:
            if time.monotonic() >= deadline:
                raise SourceTimeout() from exc
            raise SourceUnavailable(f"reading the source failed: {type(exc).__name__}") from exc
        return b"".join(chunks)


def _limit_next_read(response: urllib3.BaseHTTPResponse, timeout: urllib3.Timeout) -> None:
    connection = getattr(response, "connection", None)
    sock = getattr(connection, "sock", None)
    if sock is not None and isinstance(timeout.read_timeout, float):
        sock.settimeout(timeout.read_timeout)


def _new_pool(scheme: str, address: str, port: int, host: str) -> urllib3.HTTPConnectionPool:
    if scheme == "https":
        # Connect to the checked address, verify the certificate of the host name.
        return urllib3.HTTPSConnectionPool(
            address,
            port,
            maxsize=_POOL_CONNECTIONS,
            server_hostname=host,
            assert_hostname=host,
            cert_reqs="CERT_REQUIRED",
            ca_certs=certifi.where(),
        )
    return urllib3.HTTPConnectionPool(address, port, maxsize=_POOL_CONNECTIONS)
