"""Which sources may be fetched: host allow-list and address classes.

The allow-list holds exact host names and `*.example.com` suffixes, compared
as lower-case strings, never as regular expressions. Addresses are refused
unless public: loopback, private, link-local, CGNAT, multicast, reserved,
unspecified, IPv6 site-local and documentation (fec0::/10, 3fff::/20), and
IPv6 addresses that embed an IPv4 address (mapped, 6to4,
NAT64, Teredo), except networks listed in `allowed_private_networks`.
"""

from __future__ import annotations

import ipaddress
import re
import string
from urllib.parse import quote, urlsplit, urlunsplit

from common.errors import SourceForbidden
from common.settings import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
ALLOWED_SCHEMES = ("http", "https")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")
_KEPT_AS_IS = "".join(sorted(_UNRESERVED)) + "!$&'()*+,;=:@/?%"  # RFC 3986 pchar, query
_LONE_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = [ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48")]
# Not public, although Python's is_private / is_global let them through:
# deprecated site-local (RFC 3879) and the documentation prefix of RFC 9637.
_NOT_GLOBAL_V6 = [ipaddress.ip_network("fec0::/10"), ipaddress.ip_network("3fff::/20")]


def normalise_host(host: str) -> str:
    return host.strip("[]").rstrip(".").lower()


def host_of(url: str) -> str:
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError as exc:
        raise SourceForbidden(f"malformed source URL {url!r}") from exc
    if parts.scheme not in ALLOWED_SCHEMES:
        raise SourceForbidden(f"source scheme {parts.scheme!r} is not allowed")
    if not host:
        raise SourceForbidden("source URL has no host")
    return normalise_host(host)


def port_of(url: str) -> int:
    """The port a (checked) http(s) URL connects to."""
    parts = urlsplit(url)
    return parts.port or (443 if parts.scheme == "https" else 80)


def normalised_source(url: str, query_allowed: bool) -> str:
    """`url` (a request's `source=`) in the one spelling of its resource, so that
    one resource is one original: RFC 3986's normalisations (section 6.2.2:
    scheme and host in lower case, the default port left out, percent-encodings
    of unreserved characters decoded and the others in upper case, dot segments
    removed; an empty query and the fragment dropped), the host's trailing dot
    dropped and repeated slashes merged, as nginx merges them. SourceForbidden
    for a URL that is malformed, carries credentials, or has a query while
    `query_allowed` (allowed_source_query) is off."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise SourceForbidden(f"malformed source URL {url!r}") from exc
    scheme = parts.scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
        raise SourceForbidden(f"source scheme {parts.scheme!r} is not allowed")
    if parts.username is not None or parts.password is not None:
        raise SourceForbidden("a source URL may not carry a user name or password")
    host = normalise_host(parts.hostname or "")
    if not host:
        raise SourceForbidden("source URL has no host")
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        netloc = f"{netloc}:{port}"
    query = _normalised_escapes(parts.query)
    if query and not query_allowed:
        raise SourceForbidden("a source URL may not have a query here (allowed_source_query)")
    return urlunsplit((scheme, netloc, _normalised_path(parts.path), query, ""))


def _normalised_escapes(text: str) -> str:
    """Unreserved characters as themselves, every other escape in upper case,
    and what must be escaped (spaces, non-ASCII, a lone %) escaped."""
    text = quote(_LONE_PERCENT.sub("%25", text), safe=_KEPT_AS_IS)

    def one(escape: re.Match[str]) -> str:
        char = chr(int(escape.group(1), 16))
        return char if char in _UNRESERVED else escape.group(0).upper()

    return _ESCAPE.sub(one, text)


def _normalised_path(path: str) -> str:
    """The path without dot segments or empty ones (after its escapes are
    normalised: `%2E%2E` is a `..`), keeping a trailing slash."""
    segments = _normalised_escapes(path).split("/")
    kept: list[str] = []
    for segment in segments:
        if segment == "..":
            if kept:
                kept.pop()
        elif segment not in ("", "."):
            kept.append(segment)
    trailing = "/" if kept and segments[-1] in ("", ".", "..") else ""
    return "/" + "/".join(kept) + trailing


def origin_of(url: str) -> str:
    """The scheme, host and port a (checked) http(s) URL connects to: what fails
    or answers together (`http://images.example.com:80`)."""
    return f"{urlsplit(url).scheme.lower()}://{host_of(url)}:{port_of(url)}"


def allowed_ports(settings: Settings) -> frozenset[int]:
    """allowed_source_ports plus the port of source_domain."""
    return frozenset([*settings.allowed_source_ports, port_of(settings.source_domain)])


def allowed_hosts(settings: Settings) -> list[str]:
    """The allow-list: the host of source_domain plus allowed_sources."""
    return [host_of(settings.source_domain), *map(normalise_host, settings.allowed_sources)]


def host_allowed(host: str, patterns: list[str]) -> bool:
    host = normalise_host(host)
    for pattern in patterns:
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]):  # "*.example.com": subdomains, not example.com
                return True
        elif host == pattern:
            return True
    return False


def check_source_url(url: str, patterns: list[str], ports: frozenset[int]) -> None:
    """Raise SourceForbidden unless `url` is http(s) on an allowed host and port."""
    host = host_of(url)
    if not host_allowed(host, patterns):
        raise SourceForbidden(f"source host {host!r} is not allowed")
    port = port_of(url)
    if port not in ports:
        raise SourceForbidden(f"source port {port} is not allowed")


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if any(address in network for network in _NAT64):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def address_refusal(address: IPAddress, exempt: list[Network]) -> str | None:
    """Why `address` may not be connected to, or None when it may."""
    if any(address.version == network.version and address in network for network in exempt):
        return None
    if isinstance(address, ipaddress.IPv6Address) and embedded_ipv4(address) is not None:
        return "an IPv6 address that embeds an IPv4 address"
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if address.version == 4 and address in _CGNAT:
        return "a CGNAT address"
    if address.version == 6 and any(address in network for network in _NOT_GLOBAL_V6):
        return "a site-local or documentation address"
    if address.is_private or address.is_reserved or not address.is_global:
        return "a private or reserved address"
    return None


def exempt_networks(settings: Settings) -> list[Network]:
    return [ipaddress.ip_network(cidr, strict=False) for cidr in settings.allowed_private_networks]
