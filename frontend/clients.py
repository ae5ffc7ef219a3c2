"""Who a request comes from (its client, its request id), and how many resizes each
client may cause.

The client is the peer's address, or, when the peer is one of
`trusted_proxies`, the last address of `X-Forwarded-For` that is not a
trusted proxy (each proxy appends the address it got the request from, so
everything left of the first untrusted hop may be made up by the client).

The budget is a token bucket per client, shared by every frontend process of
the host: the buckets live in one small file that each process maps, a slot
per client chosen by a hash of its address, each slot updated under a lock of
its own bytes. Only resizes take from it: a miss costs far more than a lock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import ipaddress
import mmap
import os
import re
import secrets
import struct
import time
from collections.abc import Iterator
from pathlib import Path

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_IPV6_CLIENT_PREFIX = 64  # one IPv6 host gets a /64: counted as one client
_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


@dataclasses.dataclass(frozen=True)
class Caller:
    """Who asked: the client the budget counts, and the request's id (X-Request-ID)."""

    client: str
    request_id: str


def request_id(given: str | None) -> str:
    """The client's X-Request-ID when it is a short token of safe characters, else a new one."""
    if given is not None and _SAFE_REQUEST_ID.fullmatch(given):
        return given
    return secrets.token_hex(8)


def trusted_networks(cidrs: list[str]) -> list[Network]:
    return [ipaddress.ip_network(cidr, strict=False) for cidr in cidrs]


def client_address(peer: str, forwarded_for: str | None, trusted: list[Network]) -> str:
    """The request's client (an IPv6 client as its /64)."""
    if not trusted and ":" not in peer:
        return peer  # the cache-hit path asks too: no parsing for the common case
    hops = [peer]
    if trusted and forwarded_for:
        hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()] + hops
    for hop in reversed(hops):
        try:
            address = ipaddress.ip_address(hop)
        except ValueError:
            return hop[:64]  # only a trusted proxy could have put it there
        if not any(address in network for network in trusted):
            return _as_client(address)
    return _as_client(ipaddress.ip_address(hops[0]))


def _as_client(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/{_IPV6_CLIENT_PREFIX}", strict=False))
    return str(address)


@dataclasses.dataclass
class _Slot:
    spent: float  # resizes taken and not yet refilled


class MissBudget:
    """Token buckets of resizes per client, in a file shared by the host's frontends.

    Clients whose addresses hash to one slot share its bucket: a client can
    never get a fresh bucket by alternating addresses, and a stranger shares
    one with another client once in SLOTS.
    """

    SLOTS = 65_536
    _SLOT = struct.Struct("<dd")  # tokens spent, when counted (epoch s); zeros: a full bucket

    def __init__(self, path: Path, rate_per_s: float, burst: int) -> None:
        self._rate_per_s = rate_per_s
        self._burst = float(burst)
        path.parent.mkdir(parents=True, exist_ok=True)
        size = self.SLOTS * self._SLOT.size
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        if os.fstat(self._fd).st_size < size:
            os.ftruncate(self._fd, size)
        self._map = mmap.mmap(self._fd, size)

    def take(self, client: str) -> float:
        """Take one resize from `client`'s budget: 0.0 when it may, else the seconds
        until it may again (nothing is taken then)."""
        with self._slot(client) as slot:
            if slot.spent + 1.0 <= self._burst:
                slot.spent += 1.0
                return 0.0
            return (slot.spent + 1.0 - self._burst) / self._rate_per_s

    def charge(self, client: str, misses: float) -> None:
        """Take `misses` more from `client`'s budget (a resize that cost more than one),
        into debt if need be: the client waits until the refill has paid it back."""
        with self._slot(client) as slot:
            slot.spent += misses

    @contextlib.contextmanager
    def _slot(self, client: str) -> Iterator[_Slot]:
        """`client`'s bucket, refilled up to now, locked; written back on exit."""
        digest = hashlib.blake2b(client.encode(), digest_size=8).digest()
        offset = int.from_bytes(digest, "big") % self.SLOTS * self._SLOT.size
        fcntl.lockf(self._fd, fcntl.LOCK_EX, self._SLOT.size, offset)
        try:
            spent, counted_s = self._SLOT.unpack_from(self._map, offset)
            now = time.time()
            slot = _Slot(max(0.0, spent - max(0.0, now - counted_s) * self._rate_per_s))
            yield slot
            self._SLOT.pack_into(self._map, offset, slot.spent, now)
        finally:
            fcntl.lockf(self._fd, fcntl.LOCK_UN, self._SLOT.size, offset)

    def close(self) -> None:
        self._map.close()
        os.close(self._fd)
