"""Settings: every key declared once, with type, default, meaning and rule.

A program loads `<config_dir>/<env>.json` once at start into a frozen
`Settings`. An unknown key, a missing required key, a value of the wrong
type or one its rule refuses (declared with the key: `check=POSITIVE`...)
raises `ConfigError` naming the key, and the program stops. Only the rules
across keys live apart (`_check_values`).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import re
import typing
import urllib.parse
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from common.errors import ConfigError
from common.formats import (
    CONTENT_TYPES,
    DEFAULT_MAX_OUTPUT_PIXELS,
    EXTENSION_ALIASES,
    NEGOTIABLE_FORMATS,
    SOURCE_FORMATS,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_DIR = REPO_ROOT / "config"
REQUIRED = dataclasses.MISSING


@dataclasses.dataclass(frozen=True)
class Rule:
    """A constraint declared with its key: `holds` on the value, on each item of
    a list (`per="item"`) or on each (name, value) entry of a dict (`per="entry"`);
    `says` is what a bad value is told."""

    holds: Callable[[Any], bool]
    says: str
    per: str = ""

    def broken(self, name: str, value: Any) -> str | None:
        """The complaint about `value` of key `name`, or None when it holds."""
        if self.per == "item":
            parts = [(f"{name}[{i}]", item, item) for i, item in enumerate(value)]
        elif self.per == "entry":
            parts = [(f"{name}.{key}", (key, item), item) for key, item in value.items()]
        else:
            parts = [(name, value, value)]
        for where, checked, shown in parts:
            if not self.holds(checked):
                return f"config key {where!r} {self.says}, got {shown!r}"
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


_HOST_PORT = re.compile(r"([A-Za-z0-9.-]+|\[[0-9a-fA-F:]+\]):[0-9]{1,5}")
HOST_PORT = Rule(
    lambda node: bool(_HOST_PORT.fullmatch(node)),
    "must be host:port (rabbit-1.internal:5672)",
)
OUTPUT_FORMAT = Rule(
    lambda ext: EXTENSION_ALIASES.get(ext, ext) in CONTENT_TYPES,
    f"must be an output format ({', '.join(sorted(CONTENT_TYPES))})",
)
OUTPUT_PATTERN = Rule(
    lambda pattern: bool(_OUTPUT_PATTERN.fullmatch(pattern)),
    "must be an output name or pattern (`x50.jpg`, `w*.webp`, `x100.*`)",
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


def _key(default: Any, meaning: str, check: Rule | None = None) -> Any:
    metadata = {"meaning": meaning, "check": check}
    if isinstance(default, (dict, list)):
        frozen = default
        return dataclasses.field(default_factory=lambda: type(frozen)(frozen), metadata=metadata)
    if default is REQUIRED:
        return dataclasses.field(metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    # Ports and paths.
    server_port: int = _key(7000, "Port of the public HTTP frontend.", check=PORT)
    bind_address: str = _key("0.0.0.0", "Address the frontend's ports listen on.")
    status_port: int = _key(
        7001,
        "Port of the host's status server (program status): page, /status.json, /health, /metrics.",
        check=PORT,
    )
    status_bind_address: str = _key(
        "127.0.0.1",
        "Address the status server and the uploader's /health listen on (operators only; a "
        "load balancer checks GET /health on server_port).",
    )
    status_token: str = _key(
        "",
        "When set, every status-server path but /health needs `Authorization: Bearer <token>` "
        "(401 otherwise).",
        check=TOKEN,
    )
    local_base_path: str = _key(
        REQUIRED,
        "Directory of the local output cache, `<model>/<imageType>/<partition>/<id>.<output>`: "
        "partitioned as object keys are.",
    )
    originals_path: str = _key(
        REQUIRED, "Directory where processors keep fetched originals (a disk cache)."
    )

    # Outputs: what the URL grammar allows.
    whitelisted_extensions: list[str] = _key(
        ["jpg", "png", "webp"],
        "Output extensions served; others get 406.",
        check=each(OUTPUT_FORMAT),
    )
    maximum_width: int = _key(
        1000,
        "Largest width (and height) an output may ask for; larger gets 406.",
        check=POSITIVE,
    )
    enlarge_width: bool = _key(
        False,
        "w<W> wider than the original scales it up (the original service's ImageMagick recipe "
        "did); false: never wider than the original. Boxes (x<N>, <W>x<H>) always fill the box.",
    )
    default_quality: dict[str, int] = _key(
        {"jpg": 78, "webp": 80, "avif": 60},
        "Encoder quality (1-100) per lossy output format when the URL has no -q suffix "
        "(chosen in bench/QUALITY.md: at least the original service's Q75 SSIM).",
        check=per_format(QUALITY),
    )
    auto_formats: list[str] = _key(
        [],
        "Formats a jpg request is answered in when its Accept header names them, in order of "
        "preference (webp, avif; each must be in whitelisted_extensions); such answers carry "
        "Vary: Accept. Empty: off.",
    )
    quality_target: float = _key(
        0.0,
        "When > 0 (e.g. 0.97): a jpg or webp output without -q gets the lowest quality (30-95) "
        "whose SSIM against the resized picture is at least this (at most 4 encodes); 0: "
        "default_quality applies.",
        check=SSIM_OR_OFF,
    )

    # How outputs are encoded (bench/QUALITY.md measures each setting).
    encoder_effort: dict[str, int] = _key(
        {"webp": 4, "avif": 2, "png": 6},
        "CPU spent for smaller files, per format: webp 0-6, avif 0-9 (AV1 speed), png 0-9 "
        "(zlib level).",
        check=EFFORTS,
    )
    jpeg_progressive: bool = _key(
        False,
        "Write progressive JPEG: 1-2% smaller, the same pixels, but about 1.7x the encode time "
        "(see QUALITY.md).",
    )
    jpeg_trellis: bool = _key(
        False,
        "mozjpeg's trellis quantisation, deringing, optimised scans and quant table 3: smaller "
        "at the same Q, but lower SSIM per byte and 4x the encode time (see QUALITY.md).",
    )
    png_palette: bool = _key(
        False, "Quantise PNG outputs to at most 256 colours (libimagequant): much smaller, lossy."
    )
    webp_lossless_sources: bool = _key(
        False, "A lossless original (PNG, GIF, lossless WebP) gives a lossless WebP output."
    )

    # Originals: where they come from and how they are fetched.
    source_domain: str = _key(
        REQUIRED, "Base URL of the originals; the source template is joined to it."
    )
    source_path_template: str = _key(
        "{model}/{image_type}/{id}/original.jpg",
        "Path of an original under source_domain; fields {model}, {image_type}, {id}.",
    )
    allowed_sources: list[str] = _key(
        [],
        "Hosts a `source` URL may name besides the host of source_domain: exact names or "
        "*.example.com (subdomains); compared as strings.",
    )
    allowed_private_networks: list[str] = _key(
        [],
        "CIDR networks the fetcher may connect to although they are loopback, private, "
        "link-local... (development and tests need 127.0.0.0/8).",
        check=each(PRIVATE_NETWORK),
    )
    allowed_source_query: bool = _key(
        False,
        "A `source` URL may have a query string. Off: refused (403), for each distinct query "
        "of one resource would be another original with outputs of its own.",
    )
    allowed_source_ports: list[int] = _key(
        [80, 443],
        "Ports a source URL may name (besides the port of source_domain); others get 403.",
    )
    max_source_redirects: int = _key(5, "Redirects followed when fetching an original.")
    source_connect_timeout_s: float = _key(
        3.0, "Timeout to connect to the source.", check=duration(300)
    )
    source_read_timeout_s: float = _key(
        10.0, "Timeout between bytes read from the source.", check=duration(300)
    )
    source_download_timeout_s: float = _key(
        8.0,
        "Longest a whole download of an original may take (never past job_timeout_s); past it 504.",
        check=duration(600),
    )
    max_downloads_per_source_host: int = _key(
        8,
        "Downloads from one source host one processor runs at once; a job past it gets 503 "
        "at once (a slow source cannot hold every job slot).",
        check=POSITIVE,
    )
    source_not_found_ttl_s: float = _key(
        10.0,
        "A source URL that answered 404 or 410 is not asked again for this long (per processor "
        "process); 0: always asked.",
        check=OFF_OR_POSITIVE,
    )
    source_failures_to_open: int = _key(
        5,
        "Failures in a row (connect errors, timeouts, 5xx) after which a source host is "
        "paused: its downloads fail at once with 503 for source_pause_s.",
        check=POSITIVE,
    )
    source_pause_s: float = _key(
        5.0,
        "How long a failing source host is left alone; then one download tries it again.",
        check=duration(3600),
    )
    masters_enabled: bool = _key(
        True,
        "Make every output but full_size from a pre-shrunk master of the original "
        "(short side maximum_width), kept beside the originals.",
    )

    # What one request may cost (README, Security).
    allowed_source_formats: list[str] = _key(
        ["jpeg", "png", "webp", "gif", "heif"],
        "Formats accepted as originals (jpeg, png, webp, gif, heif, tiff, svg, pdf); others 415.",
        check=each(one_of(*sorted(SOURCE_FORMATS))),
    )
    max_source_bytes: int = _key(
        50_000_000,
        "Largest original accepted; the download stops past it (413).",
        check=POSITIVE,
    )
    max_source_pixels: int = _key(
        50_000_000,
        "Largest width x height of an original, read from its header (413).",
        check=POSITIVE,
    )
    max_animation_frames: int = _key(
        100,
        "Frames an animated original (GIF, WebP) keeps in a gif or webp output; other outputs "
        "take the first frame. Every kept frame counts towards max_source_pixels.",
        check=POSITIVE,
    )
    max_source_jpeg_scans: int = _key(
        64,
        "Most scans of a progressive JPEG original, counted before any decode (413). Each "
        "scan is a pass over the whole image in a decoder that cannot be stopped midway: "
        "ordinary files have about 10; 2,647 scans of 7000x7000 cost 40 s of CPU, 64 about 1 s.",
        check=POSITIVE,
    )
    max_output_pixels: dict[str, int] = _key(
        DEFAULT_MAX_OUTPUT_PIXELS,
        "Largest output per format, width x height x frames kept, checked from the original's "
        "header before any decode (413): bounds what one encode can cost (AVIF and WebP "
        "encoders cannot be stopped midway).",
        check=per_format(POSITIVE),
    )
    max_output_bytes: int = _key(
        50_000_000,
        "Largest output a processor sends back (it travels through RabbitMQ); larger is 413.",
        check=POSITIVE,
    )
    job_timeout_s: float = _key(
        10.0,
        "Longest a processor works on one job; past it the job is abandoned (504).",
        check=duration(300, least_s=0.1),
    )
    failure_memory_s: float = _key(
        30.0,
        "How long a frontend answers a failed output again without a resize when it failed for "
        "good (413, 415, or a render past job_timeout_s). 0: never remembered.",
        check=duration_or_off(86400),
    )
    max_pending_requests: int = _key(
        1000,
        "Cache misses one frontend process waits on at once; past it 503 at once.",
        check=POSITIVE,
    )

    # Who may ask for what (README, Security).
    signing_keys: list[str] = _key(
        [],
        "HMAC-SHA256 keys; when any is set every request must be signed (several: rotation), "
        "except outputs in allowed_outputs.",
        check=each(SECRET_KEY),
    )
    source_requires_signature: bool = _key(
        False,
        "A request with a `source` URL must be signed (signing_keys) whatever its output: "
        "allowed_outputs do not cover it (403). On in the production template.",
    )
    allowed_outputs: list[str] = _key(
        [],
        "Outputs made for unsigned requests, as canonical output names; `*` matches any run "
        "of characters (`x50.*`, `w*.webp`). Others get 406 (403 with signing_keys). "
        "Empty: every output.",
        check=each(OUTPUT_PATTERN),
    )
    allowed_outputs_by_type: dict[str, list[str]] = _key(
        {},
        'The same per `<model>/<imageType>` (e.g. {"user/avatar": ["x50.*", "w500.jpg"]}); '
        "a type listed here uses its own list instead of allowed_outputs.",
        check=OUTPUTS_BY_TYPE,
    )
    allow_any_output: bool = _key(
        False,
        "Outside development and test, the programs refuse to start with signing_keys and "
        "allowed_outputs both empty (anyone could make any output) unless this is true.",
    )
    client_miss_rate_per_s: float = _key(
        1.0,
        "Resizes one client address may cause per second on this host, all frontends together "
        "(a token bucket; hits, 304s and answers from object storage are free); past it 429. "
        "0: no budget.",
        check=OFF_OR_POSITIVE,
    )
    client_miss_burst: int = _key(
        50,
        "Resizes one client may cause at once before client_miss_rate_per_s applies.",
        check=POSITIVE,
    )
    trusted_proxies: list[str] = _key(
        [],
        "CIDR networks of proxies whose X-Forwarded-For is believed: the client is the last "
        "address of it outside these networks. Empty: the header is ignored.",
        check=each(NETWORK),
    )

    # RabbitMQ and the request/reply path.
    amqp_url: str = _key(
        "amqp://guest:guest@127.0.0.1:5672/image-server",
        "RabbitMQ URL (vhost URL-encoded); one vhost per environment, so that nothing "
        "made for one is consumed by another.",
    )
    amqp_nodes: list[str] = _key(
        [],
        "The RabbitMQ cluster's nodes as host:port. Empty: amqp_url's host alone. Else "
        "amqp_url gives only the credentials and the vhost: each process connects to one "
        "node of this list (each starts at a different one) and, when its node goes away, "
        "to the next that answers.",
        check=each(HOST_PORT),
    )
    amqp_management_port: int = _key(
        15672,
        "Port of RabbitMQ's management API on each node: the status page reads unacked "
        "messages and rates in and out of the queues there, with amqp_url's credentials "
        "(the user needs the monitoring tag).",
        check=PORT,
    )
    resize_deadline_s: float = _key(
        20.0,
        "How long the frontend waits for a ResizeResult before answering 504.",
        check=duration(300, least_s=0.5),
    )
    resize_queue_max_length: int = _key(
        10_000,
        "Bound of the resize queue; a publish past it is refused (503).",
        check=POSITIVE,
    )
    resize_delivery_limit: int = _key(
        3, "Deliveries of one resize job before it is dead-lettered (a job that kills workers)."
    )
    processor_prefetch: int = _key(
        16,
        "Jobs one processor holds at once (basic_qos): their downloads run concurrently, "
        "their resizes one at a time.",
        check=POSITIVE,
    )
    amqp_reconnect_delay_s: float = _key(1.0, "Pause before reconnecting to RabbitMQ.")

    # Object storage (results persisted by the uploader, shared between hosts).
    storage_backend: str = _key(
        "filesystem",
        "Where results are persisted: filesystem or s3.",
        check=one_of("filesystem", "s3"),
    )
    storage_path: str = _key("var/storage", "Root directory of the filesystem backend.")
    storage_key_prefix: str = _key(
        "public/images/development", "Prefix of every object key (no trailing slash)."
    )
    storage_read_enabled: bool = _key(
        True, "On a local cache miss, look in object storage before queueing a resize."
    )
    storage_timeout_s: float = _key(
        5.0, "Connect and read timeout of object storage calls.", check=duration(300)
    )
    s3_endpoint: str = _key("127.0.0.1:9000", "host:port of the S3-compatible endpoint.")
    s3_bucket: str = _key("images", "Bucket of the s3 backend.")
    s3_region: str = _key("us-east-1", "Region of the bucket.")
    s3_access_key: str = _key("", "S3 access key.")
    s3_secret_key: str = _key("", "S3 secret key.")
    s3_secure: bool = _key(False, "Use TLS (https) to reach the endpoint.")
    s3_create_bucket: bool = _key(True, "Create the bucket when it is missing.")
    seaweedfs_dir: str = _key(
        "var/seaweedfs",
        "Data directory of the SeaweedFS server that `make run` starts in development "
        "(program seaweedfs, S3 on s3_endpoint).",
    )
    seaweedfs_ports: dict[str, int] = _key(
        {"master": 9333, "volume": 9380, "filer": 9388},
        "HTTP ports of that SeaweedFS' master, volume server and filer (each gRPC port is "
        "+10000); its S3 port is s3_endpoint's.",
        check=SEAWEEDFS_PORTS,
    )

    # The uploader.
    upload_rate_per_s: float = _key(
        20.0, "Most objects the uploader stores per second.", check=POSITIVE
    )
    upload_concurrency: int = _key(
        4, "Most uploads in progress at once, per uploader.", check=POSITIVE
    )
    uploader_health_port: int = _key(
        7090,
        "Port of the uploader's /health (object storage and RabbitMQ reachable).",
        check=PORT,
    )
    upload_backlog_max: int = _key(
        2_000,
        "Messages image.upload and a host's upload queue may hold; past it processors keep new "
        "uploads on disk without a message (spill_path) and the uploader of their host stores "
        "them from there.",
        check=POSITIVE,
    )
    upload_inline_max_bytes: int = _key(
        262_144,
        "An upload larger than this never travels through RabbitMQ with its bytes (uploads "
        "go by reference; this bounds the fallback when a host's disk cannot hold one): "
        "RabbitMQ holds at most upload_backlog_max times this of uploads.",
        check=POSITIVE,
    )
    spill_path: str = _key(
        "var/spill",
        "Directory of the uploads waiting on disk: held/ by reference (a message names each), "
        "the rest without a message (see above).",
    )
    spill_max_bytes: int = _key(
        10_000_000_000,
        "Most bytes of uploads waiting on disk, in spill_path/held/ and in spill_path each; "
        "past it a new one goes through RabbitMQ with its bytes after all, or, larger than "
        "upload_inline_max_bytes, is dropped and logged.",
        check=POSITIVE,
    )
    upload_retry_delays_s: list[float] = _key(
        [1.0, 5.0, 30.0, 120.0, 600.0],
        "Delay before each retry of a failed upload; when all are spent it is dead-lettered.",
        check=each(POSITIVE),
    )

    # HTTP answers.
    hot_cache_bytes: int = _key(
        16_000_000, "Memory each frontend process keeps of recently read outputs (0: none)."
    )
    send_timeout_s: float = _key(
        60.0,
        "A client that takes no part of an answer for this long is cut off (its connection "
        "closed), as nginx's send_timeout: a reader that reads nothing holds nothing for long.",
        check=duration(3600),
    )
    cache_max_age_s: int = _key(31_536_000, "Cache-Control max-age sent with every image.")
    error_max_age_s: int = _key(
        60,
        "Cache-Control max-age of error answers a CDN may keep a while (4xx but 429); "
        "429 and 5xx answers are sent with no-store.",
    )

    # Disk budgets of the per-host caches, kept by the janitor program.
    cache_max_bytes: int = _key(
        20_000_000_000,
        "Budget of the output cache (local_base_path); past it LRU files go.",
        check=POSITIVE,
    )
    originals_max_bytes: int = _key(
        10_000_000_000,
        "Budget of the cached originals (originals_path, masters excluded).",
        check=POSITIVE,
    )
    masters_max_bytes: int = _key(
        10_000_000_000, "Budget of the masters (originals_path/masters).", check=POSITIVE
    )
    janitor_interval_s: float = _key(
        30.0, "Pause between two sweeps of the janitor.", check=duration(3600)
    )
    eviction_min_age_s: float = _key(
        60.0, "A file written or read more recently than this is never evicted (it is in use)."
    )
    min_free_disk_share: float = _key(
        0.05,
        "Share of each filesystem the caches are on that the janitor keeps free, evicting past "
        "the budgets (outputs first, then masters, then originals); /health answers 503 when a "
        "filesystem the host writes to has less than half of it free. 0: off.",
        check=SHARE_OR_OFF,
    )

    # Work ahead of requests (README, "Work ahead of requests").
    popular_outputs_max: int = _key(
        0,
        "When a new image of a type is resized for a request, up to this many other popular "
        "outputs of that type are made in the background (0: off).",
    )
    popular_min_share: float = _key(
        0.1, "An output is popular when at least this share of its type's requests ask for it."
    )
    popular_min_requests: int = _key(
        50, "Requests of a type counted (on every host) before its popular outputs are trusted."
    )
    stats_interval_s: float = _key(
        30.0,
        "How often each frontend saves its request statistics to object storage and reads "
        "everyone's.",
    )
    background_queue_max_length: int = _key(
        100_000, "Most jobs image.resize.background holds; more background work is dropped."
    )
    background_deadline_s: float = _key(
        3600.0, "A background job not started within this long is dropped."
    )
    pregenerate_keys: list[str] = _key(
        [],
        "HMAC keys that sign `POST /<model>/<imageType>/<id>?outputs=...` (make outputs ahead "
        "of requests); empty: POST is refused (403).",
        check=each(SECRET_KEY),
    )
    background_job_timeout_s: float = _key(
        5.0,
        "Longest a processor works on one background job (popular outputs, POST); past it "
        "the job is abandoned.",
        check=duration(3600),
    )
    purge_keys: list[str] = _key(
        [],
        "HMAC keys that sign `DELETE /<model>/<imageType>/<id>` (purge an image everywhere); "
        "empty: DELETE is refused (403).",
        check=each(SECRET_KEY),
    )

    # Graphite (plaintext protocol, via graphitesend).
    graphite_enabled: bool = _key(False, "Send events to Graphite.")
    graphite_host: str = _key("127.0.0.1", "Graphite (carbon) host.")
    graphite_port: int = _key(2003, "Graphite plaintext port.", check=PORT)
    graphite_prefix: str = _key("stats.image_server", "Prefix of every metric name.")

    # Operations.
    log_level: str = _key(
        "INFO",
        "Python logging level of every program.",
        check=one_of("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
    )
    access_log: bool = _key(
        True, "Frontends log one JSON line per request (README, Logs); false: none."
    )
    access_log_path: str = _key(
        "var/log",
        "Directory of the request logs, access_frontend_<N>.log (rotated at 20 MB, 4 kept).",
    )
    metrics_path: str = _key(
        "var/metrics",
        "Directory where every program of this host writes its Prometheus figures; the "
        "status server reads it. One per host, emptied by `make run`.",
    )
    status_interval_s: float = _key(
        2.0,
        "How often the status server samples figures, queues and processes.",
        check=duration(3600),
    )
    drain_timeout_s: float = _key(
        25.0,
        "On SIGTERM a frontend stops accepting, answers what it holds and closes each "
        "connection after its next answer; after this long it closes the idle rest.",
        check=duration_or_off(600),
    )

    @property
    def cache_dir(self) -> Path:
        """local_base_path; a relative path is taken from the repository root."""
        return REPO_ROOT / self.local_base_path

    @property
    def originals_dir(self) -> Path:
        return REPO_ROOT / self.originals_path

    @property
    def spill_dir(self) -> Path:
        return REPO_ROOT / self.spill_path

    @property
    def access_log_dir(self) -> Path:
        return REPO_ROOT / self.access_log_path

    @property
    def metrics_dir(self) -> Path:
        return REPO_ROOT / self.metrics_path


def output_pixel_limit(settings: Settings, fmt: str) -> int:
    """max_output_pixels of `fmt`; a format the config leaves out keeps its default."""
    return settings.max_output_pixels.get(fmt, DEFAULT_MAX_OUTPUT_PIXELS.get(fmt, 0))


def describe() -> list[tuple[str, str, Any, str]]:
    """(name, type, default, meaning) of every key, for documentation."""
    rows = []
    for field in dataclasses.fields(Settings):
        if field.default is not dataclasses.MISSING:
            default: Any = field.default
        elif field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        else:
            default = "(required)"
        rows.append((field.name, str(field.type), default, field.metadata["meaning"]))
    return rows


def _check_type(name: str, value: Any, expected: Any) -> Any:
    origin = typing.get_origin(expected)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if origin is None:
        if isinstance(value, bool) != (expected is bool) or not isinstance(value, expected):
            raise ConfigError(f"config key {name!r} must be {expected.__name__}, got {value!r}")
        return value
    args = typing.get_args(expected)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"config key {name!r} must be a list, got {value!r}")
        return [_check_type(f"{name}[{i}]", item, args[0]) for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key {name!r} must be an object, got {value!r}")
        return {k: _check_type(f"{name}.{k}", v, args[1]) for k, v in value.items()}
    raise ConfigError(f"config key {name!r} has an unsupported declared type")


def from_mapping(raw: dict[str, Any]) -> Settings:
    hints = typing.get_type_hints(Settings)
    fields = {field.name: field for field in dataclasses.fields(Settings)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(f"unknown config key(s): {', '.join(unknown)}")
    values = {}
    for name, field in fields.items():
        if name in raw:
            values[name] = _check_type(name, raw[name], hints[name])
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing required config key {name!r}")
    settings = Settings(**values)
    _check_values(settings)
    return settings


def _check_values(settings: Settings) -> None:
    """Each key's own rule (declared with it), then the rules across keys."""
    for field in dataclasses.fields(Settings):
        rule = field.metadata.get("check")
        complaint = rule.broken(field.name, getattr(settings, field.name)) if rule else None
        if complaint:
            raise ConfigError(complaint)
    for fmt in settings.auto_formats:
        if fmt not in NEGOTIABLE_FORMATS or fmt not in settings.whitelisted_extensions:
            raise ConfigError(
                f"config key 'auto_formats': {fmt!r} must be webp or avif and whitelisted"
            )
    _check_ports_apart(settings)
    _check_cache_paths(settings)
    largest = max(settings.max_output_bytes, settings.max_source_bytes)
    if settings.spill_max_bytes < largest:  # such an upload could never be kept on disk
        raise ConfigError(
            f"config key 'spill_max_bytes' must hold the largest upload: at least "
            f"max_output_bytes and max_source_bytes ({largest})"
        )
    if settings.storage_backend == "s3" and not (settings.s3_access_key and settings.s3_secret_key):
        raise ConfigError(
            "config keys 's3_access_key' and 's3_secret_key' must be set for the s3 backend "
            "(IMAGE_SERVER_S3_SECRET_KEY_FILE...): without them every request is anonymous"
        )


def _check_ports_apart(settings: Settings) -> None:
    ports = {"server_port": settings.server_port, "status_port": settings.status_port,
             "uploader_health_port": settings.uploader_health_port}  # fmt: skip
    for name, port in ports.items():
        others = [other for other, taken in ports.items() if taken == port and other != name]
        if others:
            raise ConfigError(f"config key {name!r} must differ from {others[0]!r} ({port})")


def _check_cache_paths(settings: Settings) -> None:
    """The directories the janitor evicts from, or the uploader empties, must be
    directories of their own: not empty, `/`, a top-level directory, the
    checkout or a directory holding it, a home directory, nor inside another."""
    paths = {"local_base_path": settings.cache_dir, "originals_path": settings.originals_dir,
             "spill_path": settings.spill_dir}  # fmt: skip
    if settings.storage_backend == "filesystem":
        paths["storage_path"] = REPO_ROOT / settings.storage_path
    resolved = {}
    for name, path in paths.items():
        if not str(getattr(settings, name)).strip():
            raise ConfigError(f"config key {name!r} must name a directory, got ''")
        where = path.resolve()
        home = where == Path.home() or where.parent == Path("/home")
        if len(where.parts) < 3 or where == REPO_ROOT or where in REPO_ROOT.parents or home:
            raise ConfigError(
                f"config key {name!r} must be a directory of its own (files are evicted from "
                f"it), not {where}"
            )
        resolved[name] = where
    for name, where in resolved.items():
        for other, around in resolved.items():
            if other != name and (where == around or around in where.parents):
                raise ConfigError(f"config key {name!r} ({where}) must not be inside {other!r}")


OPEN_ENVIRONMENTS = ("development", "test")  # may start with every output open to anyone


def check_exposure(settings: Settings, env: str) -> None:
    """Refuse to run a public environment where any anonymous client may make any output."""
    if (
        env in OPEN_ENVIRONMENTS
        or settings.signing_keys
        or settings.allowed_outputs
        or settings.allow_any_output
    ):
        return
    raise ConfigError(
        f"environment {env!r} would make any output for anyone: set 'signing_keys' or "
        "'allowed_outputs' (or 'allow_any_output': true if that is meant)"
    )


ENV_PREFIX = "IMAGE_SERVER_"
# IMAGE_SERVER_ variables that are not config keys: read by `make run`, supervisord.conf
# and the programs' arguments (ENV and CONFIG_DIR).
PROGRAM_VARIABLES = frozenset({"ENV", "CONFIG_DIR", "FRONTENDS", "PROCESSORS", "DEV_SERVICES"})
# Keys whose values are never printed (common.config prints them masked).
SECRETS = frozenset(
    {
        "amqp_url",
        "s3_access_key",
        "s3_secret_key",
        "signing_keys",
        "purge_keys",
        "pregenerate_keys",
        "status_token",
    }
)


def load(
    env: str, config_dir: Path = DEFAULT_CONFIG_DIR, environ: Mapping[str, str] | None = None
) -> Settings:
    """The settings of `env`: each key from the environment (IMAGE_SERVER_<KEY> or
    IMAGE_SERVER_<KEY>_FILE), else `<config_dir>/<env>.json`, else its default."""
    return load_with_sources(env, config_dir, environ)[0]


def load_with_sources(
    env: str, config_dir: Path = DEFAULT_CONFIG_DIR, environ: Mapping[str, str] | None = None
) -> tuple[Settings, dict[str, str]]:
    """Like load, and where each key's value came from: default, file or a variable."""
    path = Path(config_dir) / f"{env}.json"
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"no config file for environment {env!r}: {path}") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a JSON object")
    sources = {name: f"file {path}" for name in raw}
    for name, (value, variable) in from_environment(os.environ if environ is None else environ):
        raw[name] = value
        sources[name] = f"environment {variable}"
    settings = from_mapping(raw)
    check_exposure(settings, env)
    for field in dataclasses.fields(Settings):
        sources.setdefault(field.name, "default")
    return settings, sources


def from_environment(environ: Mapping[str, str]) -> list[tuple[str, tuple[Any, str]]]:
    """(key, (value, variable)) of every IMAGE_SERVER_<KEY>[_FILE] in `environ`; a
    variable that names no key (a typo in a secret's name) is an error."""
    hints = typing.get_type_hints(Settings)
    found: dict[str, tuple[Any, str]] = {}
    for variable, text in sorted(environ.items()):
        if not variable.startswith(ENV_PREFIX) or variable[len(ENV_PREFIX) :] in PROGRAM_VARIABLES:
            continue
        name = variable[len(ENV_PREFIX) :].lower()
        if name not in hints and name.endswith("_file") and name[: -len("_file")] in hints:
            name = name[: -len("_file")]
            text = _read_secret_file(variable, text)
        elif name not in hints:
            raise ConfigError(f"environment variable {variable} names no config key")
        if name in found:
            raise ConfigError(f"config key {name!r} is set twice: {found[name][1]} and {variable}")
        found[name] = (_parse_variable(variable, text, hints[name], name in SECRETS), variable)
    return sorted(found.items())


def _read_secret_file(variable: str, path: str) -> str:
    try:
        return Path(path).read_text().rstrip("\n")
    except OSError as exc:
        raise ConfigError(f"{variable}: cannot read {path}: {exc.strerror}") from exc


def _parse_variable(variable: str, text: str, expected: Any, secret: bool) -> Any:
    """A string key takes the text as it is; any other is the text read as JSON."""
    if expected is str:
        return text
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        shown = "(a secret, not shown)" if secret else repr(text)
        raise ConfigError(f"{variable} must be JSON for its key's type, got {shown}") from exc


def masked(name: str, value: Any) -> Any:
    """`value` as it may be printed: a secret shows only whether it is set."""
    if name not in SECRETS or not value:
        return value
    if name == "amqp_url":  # the address is useful, the password is not
        parts = urllib.parse.urlsplit(value)
        if parts.password:
            host = parts.netloc.rsplit("@", 1)[1]
            return urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))
        return value
    return ["***"] * len(value) if isinstance(value, list) else "***"
