"""Typed messages that cross RabbitMQ.

Wire format: a 4-byte big-endian header length, a JSON header, then the raw
payload bytes (image data is never base64-encoded). `decode()` raises
`MessageDecodeError` for anything it cannot read, so a consumer can
dead-letter the message instead of crashing on it.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import struct
from typing import Any, ClassVar, TypeVar

from common.errors import ImageServerError, MessageDecodeError, from_name
from common.keys import ImageRef, OutputRef
from common.urls import SEGMENT, Fit, Gravity

_LENGTH = struct.Struct(">I")
HELD_FILE_NAME = re.compile(r"[0-9a-f]{16}-[0-9a-f]{16}")  # common.spill.HeldUploads names them
T = TypeVar("T", bound="_Message")


def pack(header: dict[str, Any], payload: bytes = b"") -> bytes:
    head = json.dumps(header, separators=(",", ":")).encode()
    return b"".join((_LENGTH.pack(len(head)), head, payload))


def unpack(body: bytes) -> tuple[dict[str, Any], bytes]:
    if len(body) < _LENGTH.size:
        raise MessageDecodeError("message shorter than its length prefix")
    (length,) = _LENGTH.unpack_from(body)
    end = _LENGTH.size + length
    if end > len(body):
        raise MessageDecodeError("message header runs past the body")
    try:
        header = json.loads(body[_LENGTH.size : end])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MessageDecodeError(f"message header is not JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise MessageDecodeError("message header is not an object")
    return header, body[end:]


class _Message:
    """encode/decode for a frozen dataclass whose `payload` field (if any) is bytes."""

    kind: ClassVar[str]

    def encode(self) -> bytes:
        fields = dataclasses.asdict(self)  # type: ignore[call-overload]
        payload = fields.pop("payload", b"")
        return pack({"kind": self.kind, **fields}, payload)

    @classmethod
    def decode(cls: type[T], body: bytes) -> T:
        header, payload = unpack(body)
        if header.pop("kind", None) != cls.kind:
            raise MessageDecodeError(f"not a {cls.kind} message")
        if "payload" in {f.name for f in dataclasses.fields(cls)}:  # type: ignore[arg-type]
            header["payload"] = payload
        try:
            message = cls(**header)
            message.validate()  # type: ignore[attr-defined]
        except (TypeError, ValueError) as exc:
            raise MessageDecodeError(f"malformed {cls.kind} message: {exc}") from exc
        return message


def _require(condition: bool, what: str) -> None:
    if not condition:
        raise ValueError(what)


@dataclasses.dataclass(frozen=True)
class ResizeJob(_Message):
    kind: ClassVar[str] = "resize_job.v1"

    cache_key: str
    source_url: str
    fit: Fit
    width: int | None
    height: int | None
    format: str
    quality: int
    deadline_epoch_s: float
    # > 0: the encoder picks the lowest quality whose output keeps this SSIM
    # (processor/imaging/encode.py).
    quality_target: float = 0.0
    # When the frontend published it (0: unknown): the processor measures queue wait.
    queued_epoch_s: float = 0.0
    # Make it even when object storage has the output (batch regeneration);
    # otherwise a background job whose output is stored is skipped.
    replace: bool = False
    # The X-Request-ID of the request that asked for it: in the job's and the upload's lines.
    request_id: str = ""
    # Where a cover crop is anchored (Gravity); a -pad output's colour (rrggbb, "": default).
    gravity: Gravity = Gravity.CENTRE
    background: str = ""
    # The asking frontend's cache (common.files.directory_identity): a processor
    # whose local_base_path is that cache writes the output there, and its
    # reply names it instead of carrying the bytes. "": bytes in the reply.
    reply_cache: str = ""

    def __post_init__(self) -> None:
        # On the wire they are strings: typed once, here (ValueError: not a job).
        object.__setattr__(self, "fit", Fit(self.fit))
        object.__setattr__(self, "gravity", Gravity(self.gravity))

    @functools.cached_property
    def output(self) -> OutputRef:
        """The output `cache_key` names, parsed once: when the job is decoded."""
        return OutputRef.from_cache_key(self.cache_key)

    def validate(self) -> None:
        _require(isinstance(self.reply_cache, str), "reply_cache")
        _require(isinstance(self.background, str), "background")
        _require(re.fullmatch(r"(?:[0-9a-f]{6})?", self.background) is not None, "background")
        _require(isinstance(self.source_url, str) and bool(self.source_url), "source_url")
        _require(isinstance(self.cache_key, str) and bool(self.cache_key), "cache_key")
        _require(bool(self.output.name), "cache_key")
        _require(isinstance(self.format, str), "format")
        _require(isinstance(self.quality, int) and 1 <= self.quality <= 100, "quality")
        for side in (self.width, self.height):
            _require(side is None or (isinstance(side, int) and side > 0), "width/height")
        _require(isinstance(self.deadline_epoch_s, (int, float)), "deadline_epoch_s")
        _require(
            isinstance(self.quality_target, (int, float)) and 0 <= self.quality_target < 1,
            "quality_target",
        )
        _require(isinstance(self.queued_epoch_s, (int, float)), "queued_epoch_s")
        _require(isinstance(self.replace, bool), "replace")
        _require(isinstance(self.request_id, str), "request_id")


@dataclasses.dataclass(frozen=True)
class ResizeResult(_Message):
    """Either the output (its bytes, or `in_cache`: written to the asking frontend's
    cache, its bytes no one's to carry) with its content type, or an error by
    class name."""

    kind: ClassVar[str] = "resize_result.v1"

    content_type: str = ""
    error_name: str = ""
    error_message: str = ""
    payload: bytes = b""
    # Seconds of the processor's resize thread the job took (what the client's miss cost).
    resize_s: float = 0.0
    in_cache: bool = False

    @classmethod
    def success(cls, content_type: str, data: bytes, resize_s: float = 0.0) -> ResizeResult:
        return cls(content_type=content_type, payload=data, resize_s=resize_s)

    def written_to_cache(self) -> ResizeResult:
        """This success, its output written where the asking frontend's cache keeps it."""
        return ResizeResult(self.content_type, resize_s=self.resize_s, in_cache=True)

    @classmethod
    def failure(cls, error: ImageServerError, resize_s: float = 0.0) -> ResizeResult:
        return cls(error_name=type(error).__name__, error_message=error.message, resize_s=resize_s)

    def validate(self) -> None:
        _require(bool(self.content_type) != bool(self.error_name), "content_type xor error")
        _require(isinstance(self.resize_s, (int, float)) and self.resize_s >= 0, "resize_s")
        _require(isinstance(self.in_cache, bool), "in_cache")
        _require(not (self.in_cache and (self.payload or self.error_name)), "in_cache: no bytes")

    def raise_for_error(self) -> None:
        if self.error_name:
            raise from_name(self.error_name, self.error_message)


@dataclasses.dataclass(frozen=True)
class UploadJob(_Message):
    """An object to persist: a resize result, or an original fetched from its source.

    By reference (`file`): the bytes wait in a file of the host that made them
    (common/spill.py, `HeldUploads`), which only that host's uploader reads;
    the message travels in that host's queue (amqp.host_upload_queue(`host`)).
    Else the bytes are the payload (a dead letter, a replay, a host whose disk
    could not hold them)."""

    kind: ClassVar[str] = "upload_job.v1"

    key: str
    content_type: str
    attempt: int = 0  # failed uploads so far; picks the next retry delay
    payload: bytes = b""
    request_id: str = ""  # of the request whose job made it (docs/metrics-and-logs.md, Logs)
    # The output whose job made it, and when that job began: a purge of its image
    # after that undoes the put (common/purge.py). "": not an image's object.
    made_for: str = ""
    made_epoch_s: float = 0.0
    file: str = ""  # by reference: the file of `host`'s held uploads that holds it
    host: str = ""

    def validate(self) -> None:
        _require(isinstance(self.key, str) and bool(self.key), "key")
        _require(isinstance(self.file, str) and isinstance(self.host, str), "file, host")
        _require(self.file == "" or HELD_FILE_NAME.fullmatch(self.file) is not None, "file")
        _require(bool(self.file) == bool(self.host), "file and host together")
        _require(not (self.file and self.payload), "by reference: no payload")
        _require(isinstance(self.made_for, str), "made_for")
        _require(isinstance(self.made_epoch_s, (int, float)), "made_epoch_s")
        _require(isinstance(self.content_type, str) and bool(self.content_type), "content_type")
        _require(isinstance(self.attempt, int) and self.attempt >= 0, "attempt")
        _require(isinstance(self.request_id, str), "request_id")


@dataclasses.dataclass(frozen=True)
class PurgeImage(_Message):
    """Every output, original and master of one image goes (fanned out to every host)."""

    kind: ClassVar[str] = "purge_image.v1"

    model: str
    image_type: str
    id: str
    default_source: str  # the original's URL from source_domain and the template
    explicit_source: str = ""  # a `source=` URL, when that one is purged too

    @property
    def image(self) -> ImageRef:
        """The image purged, with all its sources."""
        return ImageRef(self.model, self.image_type, self.id)

    def validate(self) -> None:
        for segment in (self.model, self.image_type, self.id):
            _require(isinstance(segment, str) and SEGMENT.fullmatch(segment) is not None, "path")
        _require(isinstance(self.default_source, str) and bool(self.default_source), "source")
        _require(isinstance(self.explicit_source, str), "explicit_source")

    @property
    def source_urls(self) -> list[str]:
        return [url for url in (self.default_source, self.explicit_source) if url]
