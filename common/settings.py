"""Settings: every key declared once, with type, default, meaning and rule
(common/config_rules.py); common/config.py loads them."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from common.config_rules import (
    HOST,
    HOST_PORT,
    PORT,
    POSITIVE,
    SEAWEEDFS_PORTS,
    SECRET_KEY,
    SHARE_OR_OFF,
    duration,
    duration_or_off,
    each,
    key,
    one_of,
    url,
)
from common.formats import DEFAULT_MAX_OUTPUT_PIXELS
from common.settings_served import ServedKeys

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_DIR = REPO_ROOT / "config"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings(ServedKeys):
    """Every key: those of what is served (ServedKeys), then those of how it runs."""

    # RabbitMQ and the request/reply path.
    amqp_url: str = key(
        "amqp://guest:guest@127.0.0.1:5672/image-server",
        "RabbitMQ URL (vhost URL-encoded); one vhost per environment, so that nothing "
        "made for one is consumed by another.",
        check=url("amqp", "amqps"),
    )
    amqp_nodes: list[str] = key(
        [],
        "The RabbitMQ cluster's nodes as host:port. Empty: amqp_url's host alone. Else "
        "amqp_url gives only the credentials and the vhost: each process connects to one "
        "node of this list (each starts at a different one) and, when its node goes away, "
        "to the next that answers.",
        check=each(HOST_PORT),
    )
    amqp_management_port: int = key(
        15672,
        "Port of RabbitMQ's management API on each node: the status page reads unacked "
        "messages and rates in and out of the queues there, with amqp_url's credentials "
        "(the user needs the monitoring tag).",
        check=PORT,
    )
    resize_deadline_s: float = key(
        20.0,
        "How long the frontend waits for a ResizeResult before answering 504.",
        check=duration(300, least_s=0.5),
    )
    resize_queue_max_length: int = key(
        10_000,
        "Bound of the resize queue; a publish past it is refused (503).",
        check=POSITIVE,
    )
    resize_delivery_limit: int = key(
        3, "Deliveries of one resize job before it is dead-lettered (a job that kills workers)."
    )
    processor_prefetch: int = key(
        16,
        "Jobs one processor holds at once (basic_qos): their downloads run concurrently, "
        "their resizes one at a time.",
        check=POSITIVE,
    )
    amqp_reconnect_delay_s: float = key(1.0, "Pause before reconnecting to RabbitMQ.")

    # Object storage (results persisted by the uploader, shared between hosts).
    storage_backend: str = key(
        "filesystem",
        "Where results are persisted: filesystem or s3.",
        check=one_of("filesystem", "s3"),
    )
    storage_path: str = key("var/storage", "Root directory of the filesystem backend.")
    storage_key_prefix: str = key(
        "public/images/development", "Prefix of every object key (no trailing slash)."
    )
    storage_read_enabled: bool = key(
        True, "On a local cache miss, look in object storage before queueing a resize."
    )
    storage_timeout_s: float = key(
        5.0, "Connect and read timeout of object storage calls.", check=duration(300)
    )
    s3_endpoint: str = key(
        "127.0.0.1:9000", "host:port of the S3-compatible endpoint.", check=HOST_PORT
    )
    s3_bucket: str = key("images", "Bucket of the s3 backend.")
    s3_region: str = key("us-east-1", "Region of the bucket.")
    s3_access_key: str = key("", "S3 access key.")
    s3_secret_key: str = key("", "S3 secret key.")
    s3_secure: bool = key(False, "Use TLS (https) to reach the endpoint.")
    s3_create_bucket: bool = key(True, "Create the bucket when it is missing.")
    seaweedfs_dir: str = key(
        "var/seaweedfs",
        "Data directory of the SeaweedFS server that `make run` starts in development "
        "(program seaweedfs, S3 on s3_endpoint).",
    )
    seaweedfs_ports: dict[str, int] = key(
        {"master": 9333, "volume": 9380, "filer": 9388},
        "HTTP ports of that SeaweedFS' master, volume server and filer (each gRPC port is "
        "+10000); its S3 port is s3_endpoint's.",
        check=SEAWEEDFS_PORTS,
    )

    # The uploader.
    upload_rate_per_s: float = key(
        20.0, "Most objects the uploader stores per second.", check=POSITIVE
    )
    upload_concurrency: int = key(
        4, "Most uploads in progress at once, per uploader.", check=POSITIVE
    )
    uploader_health_port: int = key(
        7090,
        "Port of the uploader's /health (object storage and RabbitMQ reachable).",
        check=PORT,
    )
    upload_backlog_max: int = key(
        2_000,
        "Messages image.upload and a host's upload queue may hold; past it processors keep new "
        "uploads on disk without a message (spill_path) and the uploader of their host stores "
        "them from there.",
        check=POSITIVE,
    )
    upload_inline_max_bytes: int = key(
        262_144,
        "An upload larger than this never travels through RabbitMQ with its bytes (uploads "
        "go by reference; this bounds the fallback when a host's disk cannot hold one): "
        "RabbitMQ holds at most upload_backlog_max times this of uploads.",
        check=POSITIVE,
    )
    spill_path: str = key(
        "var/spill",
        "Directory of the uploads waiting on disk: held/ by reference (a message names each), "
        "the rest without a message (see above).",
    )
    spill_max_bytes: int = key(
        10_000_000_000,
        "Most bytes of uploads waiting on disk, in spill_path/held/ and in spill_path each; "
        "past it a new one goes through RabbitMQ with its bytes after all, or, larger than "
        "upload_inline_max_bytes, is dropped and logged.",
        check=POSITIVE,
    )
    upload_retry_delays_s: list[float] = key(
        [1.0, 5.0, 30.0, 120.0, 600.0],
        "Delay before each retry of a failed upload; when all are spent it is dead-lettered.",
        check=each(POSITIVE),
    )
    upload_host_queue_expiry_s: float = key(
        172_800.0,
        "RabbitMQ deletes a host's queue of uploads by reference, and its retry queues, once no "
        "uploader has used them for this long (a host gone for good leaves nothing behind); "
        "uploads a host holds longer than this, should it come back, are stored from its spill.",
        check=POSITIVE,
    )

    # HTTP answers.
    hot_cache_bytes: int = key(
        16_000_000, "Memory each frontend process keeps of recently read outputs (0: none)."
    )
    send_timeout_s: float = key(
        60.0,
        "A client that takes no part of an answer for this long is cut off (its connection "
        "closed), as nginx's send_timeout: a reader that reads nothing holds nothing for long.",
        check=duration(3600),
    )
    cache_max_age_s: int = key(31_536_000, "Cache-Control max-age sent with every image.")
    error_max_age_s: int = key(
        60,
        "Cache-Control max-age of error answers a CDN may keep a while (4xx but 429); "
        "429 and 5xx answers are sent with no-store.",
    )

    # Disk budgets of the per-host caches, kept by the janitor program.
    cache_max_bytes: int = key(
        20_000_000_000,
        "Budget of the output cache (local_base_path); past it LRU files go.",
        check=POSITIVE,
    )
    originals_max_bytes: int = key(
        10_000_000_000,
        "Budget of the cached originals (originals_path, masters excluded).",
        check=POSITIVE,
    )
    masters_max_bytes: int = key(
        10_000_000_000, "Budget of the masters (originals_path/masters).", check=POSITIVE
    )
    janitor_interval_s: float = key(
        30.0, "Pause between two sweeps of the janitor.", check=duration(3600)
    )
    eviction_min_age_s: float = key(
        60.0, "A file written or read more recently than this is never evicted (it is in use)."
    )
    min_free_disk_share: float = key(
        0.05,
        "Share of each filesystem the caches are on that the janitor keeps free (bytes and "
        "inodes), evicting past the budgets: outputs first, then masters, then originals; "
        "`/health` answers 503 when a filesystem the host writes to has less than half of it "
        "free. 0: off.",
        check=SHARE_OR_OFF,
    )

    # Work ahead of requests (see operations.md).
    popular_outputs_max: int = key(
        0,
        "When a new image of a type is resized for a request, up to this many other popular "
        "outputs of that type are made in the background (0: off).",
    )
    popular_min_share: float = key(
        0.1, "An output is popular when at least this share of its type's requests ask for it."
    )
    popular_min_requests: int = key(
        50, "Requests of a type counted (on every host) before its popular outputs are trusted."
    )
    stats_interval_s: float = key(
        30.0,
        "How often each frontend saves its request statistics to object storage and reads "
        "everyone's.",
    )
    background_queue_max_length: int = key(
        100_000, "Most jobs image.resize.background holds; more background work is dropped."
    )
    background_deadline_s: float = key(
        3600.0, "A background job not started within this long is dropped."
    )
    pregenerate_keys: list[str] = key(
        [],
        "HMAC keys that sign `POST /<model>/<imageType>/<id>?outputs=...` (make outputs ahead "
        "of requests); empty: POST is refused (403).",
        check=each(SECRET_KEY),
    )
    background_job_timeout_s: float = key(
        5.0,
        "Longest a processor works on one background job (popular outputs, POST); past it "
        "the job is abandoned.",
        check=duration(3600),
    )
    purge_keys: list[str] = key(
        [],
        "HMAC keys that sign `DELETE /<model>/<imageType>/<id>` (purge an image everywhere); "
        "empty: DELETE is refused (403).",
        check=each(SECRET_KEY),
    )

    # Graphite (plaintext protocol, via graphitesend).
    graphite_enabled: bool = key(False, "Send events to Graphite.")
    graphite_host: str = key("127.0.0.1", "Graphite (carbon) host.", check=HOST)
    graphite_port: int = key(2003, "Graphite plaintext port.", check=PORT)
    graphite_prefix: str = key("stats.image_server", "Prefix of every metric name.")

    # Operations.
    log_level: str = key(
        "INFO",
        "Python logging level of every program.",
        check=one_of("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
    )
    access_log: bool = key(
        True, "Frontends log one JSON line per request (metrics-and-logs.md, Logs); false: none."
    )
    access_log_path: str = key(
        "var/log",
        "Directory of the request logs, access_frontend_<N>.log (rotated at 20 MB, 4 kept).",
    )
    metrics_path: str = key(
        "var/metrics",
        "Directory where every program of this host writes its Prometheus figures; the "
        "status server reads it. One per host, emptied by `make run`.",
    )
    status_interval_s: float = key(
        2.0,
        "How often the status server samples figures, queues and processes.",
        check=duration(3600),
    )
    drain_timeout_s: float = key(
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
