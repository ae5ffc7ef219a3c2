"""How a config key is declared: its rule (`Rule`, checked at load with the
key's name in the complaint) and the field that carries its default and
meaning (`key`). The declaration itself is common/settings.py's."""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import urllib.parse
from collections.abc import Callable
from typing import Any

from common.formats import CONTENT_TYPES, EXTENSION_ALIASES

REQUIRED = dataclasses.MISSING


@dataclasses.dataclass(frozen=True)
class Rule:
    """A constraint declared with its key: `holds` on the value, on each item of
    a list (`per="item"`) or on each (name, value) entry of a dict (`per="entry"`);
    `says` is what a bad value is told."""

    holds: Callable[[Any], bool]
    says: str
    per: str = ""

    def broken(self, name: str, value: Any, secret: bool = False) -> str | None:
        """The complaint about `value` of key `name`, or None when it holds (a
        `secret` value is not shown)."""
        if self.per == "item":
            parts = [(f"{name}[{i}]", item, item) for i, item in enumerate(value)]
        elif self.per == "entry":
            parts = [(f"{name}.{key}", (key, item), item) for key, item in value.items()]
        else:
            parts = [(name, value, value)]
        for where, checked, shown in parts:
            if not self.holds(checked):
                got = "(a secret, not shown)" if secret else repr(shown)
                return f"config key {where!r} {self.says}, got {got}"
        return None


def one_of(*allowed: str) -> Rule:
    return Rule(lambda value: value in allowed, f"must be one of {', '.join(allowed)}")


def each(rule: Rule) -> Rule:
    return Rule(rule.holds, rule.says, per="item")


def per_format(rule: Rule) -> Rule:
    """A dict by output format (jpg, png...), each value under `rule`."""
    return Rule(
        lambda entry: entry[0] in CONTENT_TYPES and rule.holds(entry[1]),
        f"needs an output format ({', '.join(sorted(CONTENT_TYPES))}) and a value that "
        + rule.says.replace("must be", "is"),
        per="entry",
    )


def _network(cidr: str) -> bool:
    try:
        ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return False
    return True


_EFFORT_LIMITS = {"webp": 6, "avif": 9, "png": 9}
_OUTPUT_PATTERN = re.compile(r"[A-Za-z0-9_*-]+\.[a-z0-9*]+")
_IMAGE_TYPE = re.compile(r"[A-Za-z0-9_-]{1,128}/[A-Za-z0-9_-]{1,128}")
POSITIVE = Rule(lambda value: value > 0, "must be positive")
OFF_OR_POSITIVE = Rule(lambda value: value >= 0, "must be 0 (off) or positive")
QUALITY = Rule(lambda value: 1 <= value <= 100, "must be 1-100")
SSIM_OR_OFF = Rule(lambda value: 0 <= value < 1, "must be 0 (off) or an SSIM below 1")
SHARE_OR_OFF = Rule(lambda value: 0 <= value < 1, "must be 0 (off) or a share below 1")
NETWORK = Rule(_network, "must be a network (10.0.0.0/8, 127.0.0.1/32)")
# An allowance for private addresses as wide as the Internet is the SSRF guard switched off.
PRIVATE_NETWORK = Rule(
    lambda cidr: (
        _network(cidr)
        and ipaddress.ip_network(cidr, strict=False).prefixlen
        >= (8 if ipaddress.ip_network(cidr, strict=False).version == 4 else 7)
    ),
    "must be a network no wider than /8 (IPv4) or /7 (IPv6, fc00::/7)",
)
PORT = Rule(lambda port: 1 <= port <= 65535, "must be a port, 1-65535")
# A key anyone could guess signs anything: `openssl rand -base64 32` makes a good one.
SECRET_KEY = Rule(
    lambda key: len(key.strip().encode()) >= 32,
    "must be at least 32 bytes besides blanks (`openssl rand -base64 32`)",
)
TOKEN = Rule(
    lambda token: token == "" or len(token.strip()) >= 16,
    "must be empty (off) or at least 16 characters besides blanks",
)


def duration(most_s: float, least_s: float = 0.0) -> Rule:
    """Seconds above 0 (at least `least_s`) and at most `most_s`: a bound that bounds."""
    low = f"at least {least_s:g}" if least_s else "above 0"
    return Rule(
        lambda seconds: seconds > 0 and least_s <= seconds <= most_s,
        f"must be {low} and at most {most_s:g} s",
    )


def duration_or_off(most_s: float) -> Rule:
    return Rule(lambda seconds: 0 <= seconds <= most_s, f"must be 0 (off) to {most_s:g} s")


_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"  # compose names may hold _
_HOST_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")


def _address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _host(text: str) -> bool:
    return _address(text) or (len(text) <= 253 and bool(_HOST_NAME.fullmatch(text)))


def url(*schemes: str) -> Rule:
    """A URL of one of `schemes` that names a host (and, if any, a port in range)."""

    def holds(text: str) -> bool:
        try:
            parts = urllib.parse.urlsplit(text)
            parts.port  # noqa: B018 - raises ValueError when out of range
        except ValueError:
            return False
        return parts.scheme in schemes and _host(parts.hostname or "")

    example = {"amqp": "amqp://user:password@rabbit.internal:5672/vhost"}.get(
        schemes[0], f"{schemes[0]}://images.example.com/"
    )
    kinds = " or ".join(f"{scheme}://" for scheme in schemes)
    return Rule(holds, f"must be an {kinds} URL with a host ({example})")


ADDRESS = Rule(_address, "must be an IP address (0.0.0.0, 127.0.0.1, ::)")
HOST = Rule(_host, "must be a host name or an IP address")
SOURCE_HOST = Rule(
    lambda name: _host(name.removeprefix("*.")),
    "must be a host name, or *. and a domain (*.example.com)",
)
_HOST_PORT = re.compile(r"([A-Za-z0-9._-]+|\[[0-9a-fA-F:]+\]):[0-9]{1,5}")
HOST_PORT = Rule(
    lambda node: (
        bool(_HOST_PORT.fullmatch(node))
        and _host(node.rsplit(":", 1)[0].strip("[]"))
        and 1 <= int(node.rsplit(":", 1)[1]) <= 65535
    ),
    "must be host:port (rabbit-1.internal:5672)",
)
OUTPUT_FORMAT = Rule(
    lambda ext: EXTENSION_ALIASES.get(ext, ext) in CONTENT_TYPES,
    f"must be an output format ({', '.join(sorted(CONTENT_TYPES))})",
)
OUTPUT_PATTERN = Rule(
    lambda pattern: (
        bool(_OUTPUT_PATTERN.fullmatch(pattern))
        and (pattern.endswith(".*") or OUTPUT_FORMAT.holds(pattern.rsplit(".", 1)[1]))
    ),
    "must be an output name or pattern of an output format "
    f"({', '.join(sorted(CONTENT_TYPES))}): `x50.jpg`, `w*.webp`, `x100.*`",
)
OUTPUTS_BY_TYPE = Rule(
    lambda entry: (
        bool(_IMAGE_TYPE.fullmatch(entry[0]))
        and all(OUTPUT_PATTERN.holds(pattern) for pattern in entry[1])
    ),
    "must be <model>/<imageType> with output names or patterns",
    per="entry",
)
EFFORTS = Rule(
    lambda entry: entry[0] in _EFFORT_LIMITS and 0 <= entry[1] <= _EFFORT_LIMITS[entry[0]],
    f"must be within {_EFFORT_LIMITS}",
    per="entry",
)
SEAWEEDFS_PORTS = Rule(
    lambda ports: set(ports) == {"master", "volume", "filer"},
    "must name master, volume and filer",
)


def key(default: Any, meaning: str, check: Rule | None = None) -> Any:
    metadata = {"meaning": meaning, "check": check}
    if isinstance(default, (dict, list)):
        frozen = default
        return dataclasses.field(default_factory=lambda: type(frozen)(frozen), metadata=metadata)
    if default is REQUIRED:
        return dataclasses.field(metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)
