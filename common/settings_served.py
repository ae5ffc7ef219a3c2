"""The keys of what is served and to whom: ports and paths, the outputs the
URL grammar allows, how they are encoded, where originals come from, what one
request may cost and who may ask (common/settings.py declares how it runs)."""

from __future__ import annotations

import dataclasses

from common.config_rules import (
    ADDRESS,
    EFFORTS,
    NETWORK,
    OFF_OR_POSITIVE,
    OUTPUT_FORMAT,
    OUTPUT_PATTERN,
    OUTPUTS_BY_TYPE,
    PORT,
    POSITIVE,
    PRIVATE_NETWORK,
    QUALITY,
    REQUIRED,
    SECRET_KEY,
    SOURCE_HOST,
    SSIM_OR_OFF,
    TOKEN,
    duration,
    duration_or_off,
    each,
    key,
    one_of,
    per_format,
    url,
)
from common.formats import DEFAULT_MAX_OUTPUT_PIXELS, SOURCE_FORMATS


@dataclasses.dataclass(frozen=True, kw_only=True)
class ServedKeys:
    # Ports and paths.
    server_port: int = key(
        7000, "Port of the public HTTP frontend (shared by every frontend process).", check=PORT
    )
    bind_address: str = key("0.0.0.0", "Address the frontend's ports listen on.", check=ADDRESS)
    status_port: int = key(
        7001,
        "Port of the host's status server (program status): page, /status.json, /health, /metrics.",
        check=PORT,
    )
    status_bind_address: str = key(
        "127.0.0.1",
        "Address the status server and the uploader's /health listen on (operators only; a "
        "load balancer checks GET /health on server_port).",
        check=ADDRESS,
    )
    status_token: str = key(
        "",
        "When set, every status-server path but /health needs `Authorization: Bearer <token>` "
        "(401 otherwise).",
        check=TOKEN,
    )
    local_base_path: str = key(
        REQUIRED,
        "Directory of the local output cache, `<model>/<imageType>/<partition>/<id>.<output>`: "
        "partitioned as object keys are.",
    )
    originals_path: str = key(
        REQUIRED, "Directory where processors keep fetched originals (a disk cache)."
    )

    # Outputs: what the URL grammar allows.
    whitelisted_extensions: list[str] = key(
        ["jpg", "png", "webp"],
        "Output extensions served; others get 406.",
        check=each(OUTPUT_FORMAT),
    )
    maximum_width: int = key(
        1000,
        "Largest width (and height) an output may ask for; larger gets 406.",
        check=POSITIVE,
    )
    enlarge_width: bool = key(
        False,
        "w<W> wider than the original scales it up (the original service's ImageMagick recipe "
        "did); false: never wider than the original. Boxes (x<N>, <W>x<H>) always fill the box.",
    )
    default_quality: dict[str, int] = key(
        {"jpg": 78, "webp": 80, "avif": 60},
        "Encoder quality (1-100) per lossy output format when the URL has no -q suffix "
        "(chosen in bench/QUALITY.md: at least the original service's Q75 SSIM).",
        check=per_format(QUALITY),
    )
    auto_formats: list[str] = key(
        [],
        "Formats a jpg request is answered in when its Accept header names them, in order of "
        "preference (webp, avif; each must be in whitelisted_extensions); such answers carry "
        "Vary: Accept. Empty: off.",
    )
    quality_target: float = key(
        0.0,
        "When > 0 (e.g. 0.97): a jpg or webp output without -q gets the lowest quality (30-95) "
        "whose SSIM against the resized picture is at least this (at most 4 encodes); 0: "
        "default_quality applies.",
        check=SSIM_OR_OFF,
    )

    # How outputs are encoded (bench/QUALITY.md measures each setting).
    encoder_effort: dict[str, int] = key(
        {"webp": 4, "avif": 2, "png": 6},
        "CPU spent for smaller files, per format: webp 0-6, avif 0-9 (AV1 speed), png 0-9 "
        "(zlib level).",
        check=EFFORTS,
    )
    jpeg_progressive: bool = key(
        False,
        "Write progressive JPEG: 1-2% smaller, the same pixels, but about 1.7x the encode time "
        "(see QUALITY.md).",
    )
    jpeg_trellis: bool = key(
        False,
        "mozjpeg's trellis quantisation, deringing, optimised scans and quant table 3: smaller "
        "at the same Q, but lower SSIM per byte and 4x the encode time (see QUALITY.md).",
    )
    png_palette: bool = key(
        False, "Quantise PNG outputs to at most 256 colours (libimagequant): much smaller, lossy."
    )
    webp_lossless_sources: bool = key(
        False, "A lossless original (PNG, GIF, lossless WebP) gives a lossless WebP output."
    )

    # Originals: where they come from and how they are fetched.
    source_domain: str = key(
        REQUIRED,
        "Base URL of the originals; the source template is joined to it.",
        check=url("http", "https"),
    )
    source_path_template: str = key(
        "{model}/{image_type}/{id}/original.jpg",
        "Path of an original under source_domain; fields {model}, {image_type}, {id}.",
    )
    allowed_sources: list[str] = key(
        [],
        "Hosts a `source` URL may name besides the host of source_domain: exact names or "
        "`*.example.com` (subdomains); compared as strings.",
        check=each(SOURCE_HOST),
    )
    allowed_private_networks: list[str] = key(
        [],
        "CIDR networks the fetcher may connect to although they are loopback, private, "
        "link-local... (development and tests need 127.0.0.0/8).",
        check=each(PRIVATE_NETWORK),
    )
    allowed_source_query: bool = key(
        False,
        "A `source` URL may have a query string. Off: refused (403), for each distinct query "
        "of one resource would be another original with outputs of its own.",
    )
    allowed_source_ports: list[int] = key(
        [80, 443],
        "Ports a source URL may name (besides the port of source_domain); others get 403.",
    )
    max_source_redirects: int = key(5, "Redirects followed when fetching an original.")
    source_connect_timeout_s: float = key(
        3.0, "Timeout to connect to the source.", check=duration(300)
    )
    source_read_timeout_s: float = key(
        10.0, "Timeout between bytes read from the source.", check=duration(300)
    )
    source_download_timeout_s: float = key(
        8.0,
        "Longest a whole download of an original may take (connect, headers, body, redirects; "
        "never past `job_timeout_s`); past it 504.",
        check=duration(600),
    )
    max_downloads_per_source_host: int = key(
        8,
        "Downloads from one source host one processor runs at once; a job past it gets 503 "
        "at once (a slow source cannot hold every job slot).",
        check=POSITIVE,
    )
    source_not_found_ttl_s: float = key(
        10.0,
        "A source URL that answered 404 or 410 is not asked again for this long (per processor "
        "process); 0: always asked.",
        check=OFF_OR_POSITIVE,
    )
    source_failures_to_open: int = key(
        5,
        "Failures in a row (connect errors, timeouts, 5xx) after which a source host is "
        "paused: its downloads fail at once with 503 for source_pause_s.",
        check=POSITIVE,
    )
    source_pause_s: float = key(
        5.0,
        "How long a failing source host is left alone; then one download tries it again.",
        check=duration(3600),
    )
    masters_enabled: bool = key(
        True,
        "Make every output but full_size from a pre-shrunk master of the original "
        "(long side maximum_width), kept beside the originals.",
    )

    # What one request may cost (see security.md).
    allowed_source_formats: list[str] = key(
        ["jpeg", "png", "webp", "gif", "heif"],
        "Formats accepted as originals (jpeg, png, webp, gif, heif, tiff, svg, pdf); others 415.",
        check=each(one_of(*sorted(SOURCE_FORMATS))),
    )
    max_source_bytes: int = key(
        50_000_000,
        "Largest original accepted; the download stops past it (413).",
        check=POSITIVE,
    )
    max_source_pixels: int = key(
        50_000_000,
        "Largest width x height of an original, read from its header (413).",
        check=POSITIVE,
    )
    max_animation_frames: int = key(
        100,
        "Frames an animated original (GIF, WebP) keeps in a gif or webp output; other outputs "
        "take the first frame. Every kept frame counts towards max_source_pixels.",
        check=POSITIVE,
    )
    max_source_jpeg_scans: int = key(
        64,
        "Most scans of a progressive JPEG original, counted before any decode (413). Each "
        "scan is a pass over the whole image in a decoder that cannot be stopped midway: "
        "ordinary files have about 10; 2,647 scans of 7000x7000 cost 40 s of CPU, 64 about 1 s.",
        check=POSITIVE,
    )
    max_output_pixels: dict[str, int] = key(
        DEFAULT_MAX_OUTPUT_PIXELS,
        "Largest output per format, width x height x frames kept, checked from the original's "
        "header before any decode (413): bounds what one encode can cost (AVIF and WebP "
        "encoders cannot be stopped midway).",
        check=per_format(POSITIVE),
    )
    max_output_bytes: int = key(
        50_000_000,
        "Largest output a processor sends back (it travels through RabbitMQ); larger is 413.",
        check=POSITIVE,
    )
    job_timeout_s: float = key(
        10.0,
        "Longest a processor works on one job; past it the job is abandoned (504).",
        check=duration(300, least_s=0.1),
    )
    failure_memory_s: float = key(
        30.0,
        "How long a frontend answers a failed output again without a resize when it failed for "
        "good (413, 415, or a render past job_timeout_s). 0: never remembered.",
        check=duration_or_off(86400),
    )
    max_pending_requests: int = key(
        1000,
        "Cache misses one frontend process waits on at once; past it 503 at once.",
        check=POSITIVE,
    )

    # Who may ask for what (see security.md).
    signing_keys: list[str] = key(
        [],
        "HMAC-SHA256 keys; when any is set every request must be signed (several: rotation), "
        "except outputs in allowed_outputs.",
        check=each(SECRET_KEY),
    )
    source_requires_signature: bool = key(
        False,
        "A request with a `source` URL must be signed (signing_keys) whatever its output: "
        "allowed_outputs do not cover it (403). On in the production template.",
    )
    allowed_outputs: list[str] = key(
        [],
        "Outputs made for unsigned requests, as canonical output names; `*` matches any run "
        "of characters (`x50.*`, `w*.webp`). Others get 406 (403 with signing_keys). "
        "Empty: every output.",
        check=each(OUTPUT_PATTERN),
    )
    allowed_outputs_by_type: dict[str, list[str]] = key(
        {},
        'The same per `<model>/<imageType>` (e.g. {"user/avatar": ["x50.*", "w500.jpg"]}); '
        "a type listed here uses its own list instead of allowed_outputs.",
        check=OUTPUTS_BY_TYPE,
    )
    allow_any_output: bool = key(
        False,
        "Outside development and test, the programs refuse to start with signing_keys and "
        "allowed_outputs both empty (anyone could make any output) unless this is true.",
    )
    client_miss_rate_per_s: float = key(
        1.0,
        "Resizes one client address may cause per second on this host, all frontends together "
        "(a token bucket; hits, 304s and answers from object storage are free); past it 429. "
        "0: no budget.",
        check=OFF_OR_POSITIVE,
    )
    client_miss_burst: int = key(
        50,
        "Resizes one client may cause at once before client_miss_rate_per_s applies.",
        check=POSITIVE,
    )
    trusted_proxies: list[str] = key(
        [],
        "CIDR networks of proxies whose X-Forwarded-For is believed: the client is the last "
        "address of it outside these networks. Empty: the header is ignored.",
        check=each(NETWORK),
    )
