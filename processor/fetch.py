"""Fetching an original over HTTP without becoming an SSRF door.

The fetcher resolves the host itself, refuses it unless every address it
resolves to is allowed (see common.sources), then connects to the address
it checked: there is no second lookup for a rebinding DNS server to answer
differently. Redirects are followed by hand, each one checked again (host
allow-list and addresses), at most max_source_redirects of them.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Callable
from urllib.parse import urljoin, urlsplit

import certifi
import urllib3

from common import sources
from common.config import Settings
from common.errors import SourceForbidden, SourceNotFound, SourceTooLarge, SourceUnavailable

log = logging.getLogger(__name__)
_CHUNK_BYTES = 256 * 1024
_REDIRECTS = (301, 302, 303, 307, 308)
_MAX_POOLS = 64

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
        self._exempt = sources.exempt_networks(settings)
        self._resolve = resolver
        self._timeout = urllib3.Timeout(
            connect=settings.source_connect_timeout_s, read=settings.source_read_timeout_s
        )
        self._pools: dict[tuple[str, str, int, str], urllib3.HTTPConnectionPool] = {}

    def fetch(self, url: str) -> bytes:
        """The body of `url`, following checked redirects; raises an ImageServerError."""
        for _hop in range(self._max_redirects + 1):
            response = self._request(url)
            location = response.headers.get("Location")
            if response.status in _REDIRECTS and location:
                response.close()  # its body may be anything: do not read it
                url = urljoin(url, location)
                continue
            return self._body(response)
        raise SourceUnavailable(f"more than {self._max_redirects} redirects")

    def _request(self, url: str) -> urllib3.BaseHTTPResponse:
        sources.check_source_url(url, self._allowed_hosts)
        parts = urlsplit(url)
        host = sources.normalise_host(parts.hostname or "")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        address = self._checked_address(host, port)
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
            )
        except urllib3.exceptions.HTTPError as exc:
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
        pool = self._pools.get(key)
        if pool is None:
            if len(self._pools) >= _MAX_POOLS:
                self._pools.pop(next(iter(self._pools))).close()
            if scheme == "https":
                # Connect to the checked address, verify the certificate of the host name.
                pool = urllib3.HTTPSConnectionPool(
                    address,
                    port,
                    timeout=self._timeout,
                    maxsize=1,
                    server_hostname=host,
                    assert_hostname=host,
                    cert_reqs="CERT_REQUIRED",
                    ca_certs=certifi.where(),
                )
            else:
                pool = urllib3.HTTPConnectionPool(address, port, timeout=self._timeout, maxsize=1)
            self._pools[key] = pool
        return pool

    def _body(self, response: urllib3.BaseHTTPResponse) -> bytes:
        try:
            if response.status in (404, 410):
                raise SourceNotFound(f"the source answered {response.status}")
            if response.status != 200:
                raise SourceUnavailable(f"the source answered {response.status}")
            data = self._read_capped(response)
        except BaseException:
            response.close()  # unread bytes may remain: never reuse this connection
            raise
        response.release_conn()
        return data

    def _read_capped(self, response: urllib3.BaseHTTPResponse) -> bytes:
        declared = response.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > self._max_bytes:
            raise SourceTooLarge()
        chunks, size = [], 0
        try:
            for chunk in response.stream(_CHUNK_BYTES):
                size += len(chunk)
                if size > self._max_bytes:
                    raise SourceTooLarge()
                chunks.append(chunk)
        except urllib3.exceptions.HTTPError as exc:
            raise SourceUnavailable(f"reading the source failed: {type(exc).__name__}") from exc
        return b"".join(chunks)
