from __future__ import annotations

import ipaddress

import pytest

from common.config import from_mapping
from common.errors import SourceForbidden
from common.sources import (
    address_refusal,
    allowed_ports,
    check_source_url,
    host_allowed,
    normalised_source,
)

PORTS = frozenset({80, 443, 8443})

REFUSED = [
    "127.0.0.1",
    "127.8.9.10",
    "10.0.0.1",
    "172.16.0.1",
    "192.168.1.1",
    "169.254.169.254",
    "100.64.0.1",
    "100.127.255.254",
    "224.0.0.1",
    "239.1.2.3",
    "0.0.0.0",
    "255.255.255.255",
    "::",
    "::1",
    "fe80::1",
    "fc00::1",
    "fd12:3456::1",
    "ff02::1",
    "ff0e::1",
    "::ffff:127.0.0.1",
    "::ffff:8.8.8.8",
    "2002:7f00:1::",
    "2002:808:808::1",
    "64:ff9b::7f00:1",
    "64:ff9b::808:808",
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",
    "fec0::1",  # deprecated site-local: Python's is_private misses it
    "feff:ffff::1",
    "3fff::1",  # documentation (RFC 9637): Python's is_global misses it
    "3fff:fff:ffff::1",
]
ALLOWED = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "100.128.0.1"]


@pytest.mark.parametrize("address", REFUSED)
def test_refused_address_classes(address: str) -> None:
    assert address_refusal(ipaddress.ip_address(address), []) is not None


@pytest.mark.parametrize("address", ALLOWED)
def test_public_addresses_are_allowed(address: str) -> None:
    assert address_refusal(ipaddress.ip_address(address), []) is None


def test_exempt_networks_allow_exactly_themselves() -> None:
    exempt = [ipaddress.ip_network("127.0.0.1/32")]
    assert address_refusal(ipaddress.ip_address("127.0.0.1"), exempt) is None
    assert address_refusal(ipaddress.ip_address("127.0.0.2"), exempt) is not None
    # An IPv4-mapped form of an exempt address is still refused: no side doors.
    assert address_refusal(ipaddress.ip_address("::ffff:127.0.0.1"), exempt) is not None


@pytest.mark.parametrize(
    ("host", "patterns", "allowed"),
    [
        ("images.example.com", ["images.example.com"], True),
        ("IMAGES.Example.COM.", ["images.example.com"], True),
        ("a.example.com", ["*.example.com"], True),
        ("a.b.example.com", ["*.example.com"], True),
        ("example.com", ["*.example.com"], False),
        ("evil-example.com", ["*.example.com"], False),
        ("example.com.evil.net", ["*.example.com"], False),
        ("imagesxexample.com", ["images.example.com"], False),  # a dot is not a regex wildcard
        ("anything.com", [".*"], False),
        ("a.example.com", ["*example.com"], False),
    ],
)
def test_allow_list_compares_strings_not_regexes(
    host: str, patterns: list[str], allowed: bool
) -> None:
    assert host_allowed(host, patterns) is allowed


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "gopher://example.com/",
        "ftp://example.com/a.jpg",
        "http://evil.com/a.jpg",
        "http:///a.jpg",
        "http://example.com:99999/a.jpg",
        "//example.com/a.jpg",
        "javascript:alert(1)",
    ],
)
def test_sources_refused(url: str) -> None:
    with pytest.raises(SourceForbidden):
        check_source_url(url, ["example.com"], PORTS)


def test_http_and_https_on_allowed_hosts_pass() -> None:
    check_source_url("http://example.com/a.jpg", ["example.com"], PORTS)
    check_source_url("https://example.com/a.jpg?x=1", ["example.com"], PORTS)
    check_source_url("https://example.com:8443/a.jpg", ["example.com"], PORTS)


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com:6379/a.jpg",  # Redis on an allowed host
        "http://example.com:22/",
        "http://example.com:8080/a.jpg",
    ],
)
def test_only_allowed_ports_of_allowed_hosts_pass(url: str) -> None:
    with pytest.raises(SourceForbidden, match="port"):
        check_source_url(url, ["example.com"], PORTS)


def test_the_port_of_source_domain_is_allowed() -> None:
    settings = from_mapping(
        {"source_domain": "http://origin.example:8181/", "local_base_path": "c",
         "originals_path": "o"}
    )  # fmt: skip
    assert allowed_ports(settings) == {80, 443, 8181}


# --- one spelling per resource (hardening, third pass) -----------------------------

SPELLINGS = [
    "http://images.example.com/a/b/1/original.jpg",
    "http://images.example.com/a/b/1/original.jpg?",
    "http://images.example.com/a/b/1/original.jpg#x",
    "http://images.example.com/a/b/1/original.jpg?#x",
    "http://images.example.com//a/b/1/original.jpg",
    "http://images.example.com/a/./b/1/original.jpg",
    "http://images.example.com/a/b/c/../1/original.jpg",
    "HTTP://images.example.com/a/b/1/original.jpg",
    "http://IMAGES.Example.COM/a/b/1/original.jpg",
    "http://images.example.com:80/a/b/1/original.jpg",
    "http://images.example.com./a/b/1/original.jpg",
    "http://images.example.com/%61/b/1/original.jpg",
    "http://images.example.com/a/b/1/original%2Ejpg",
    "http://images.example.com/a/b/1/%2E%2E/1/original.jpg",
]


def test_every_spelling_of_one_resource_is_one_url() -> None:
    assert {normalised_source(url, False) for url in SPELLINGS} == {SPELLINGS[0]}


@pytest.mark.parametrize(
    ("given", "normal"),
    [
        ("https://x.example:443/", "https://x.example/"),
        ("https://x.example:8443", "https://x.example:8443/"),
        ("http://x.example/a%2fb", "http://x.example/a%2Fb"),  # an escaped slash stays one
        ("http://x.example/a b/é", "http://x.example/a%20b/%C3%A9"),
        ("http://x.example/100%", "http://x.example/100%25"),
        ("http://x.example/dir/", "http://x.example/dir/"),
        ("http://[::1]:8080/a/..", "http://[::1]:8080/"),
    ],
)
def test_normalised_spellings(given: str, normal: str) -> None:
    assert normalised_source(given, False) == normal


def test_a_query_is_refused_unless_allowed_and_then_kept() -> None:
    with pytest.raises(SourceForbidden, match="allowed_source_query"):
        normalised_source("http://x.example/a.jpg?utm=1", False)
    assert normalised_source("http://x.example/a.jpg?v=%7e1#f", True) == (
        "http://x.example/a.jpg?v=~1"
    )


@pytest.mark.parametrize(
    "bad",
    ["ftp://x.example/a.jpg", "http://user:pw@x.example/a.jpg", "http:///a.jpg", "http://x:99999/"],
)
def test_urls_that_cannot_be_a_source_are_refused(bad: str) -> None:
    with pytest.raises(SourceForbidden):
        normalised_source(bad, False)
