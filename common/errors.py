"""The one exception tree of the project.

Each class knows the HTTP status it maps to and whether trying again later
can help (`retryable`). Handlers raise; the frontend's `write_error` maps.
Errors cross the queue by class name (see `ResizeResult`), so the frontend
raises the same class the processor did.
"""

from __future__ import annotations


class ImageServerError(Exception):
    status = 500
    retryable = False
    # The same job would fail the same way again (the original or the output is
    # what it is): a frontend remembers such a failure for failure_memory_s.
    deterministic = False
    retry_after_s = 1  # sent as Retry-After when retryable
    default_message = "internal error"

    def __init__(self, message: str | None = None, retry_after_s: int | None = None) -> None:
        super().__init__(message or self.default_message)
        if retry_after_s is not None:
            self.retry_after_s = retry_after_s

    @property
    def message(self) -> str:
        return str(self.args[0])


class ConfigError(ImageServerError):
    default_message = "invalid configuration"


class BadRequest(ImageServerError):
    status = 400
    default_message = "bad request"


class UriTooLong(ImageServerError):
    status = 414
    default_message = "the request path is too long"


class NotAcceptable(ImageServerError):
    status = 406
    default_message = "not acceptable"


class SourceNotFound(ImageServerError):
    status = 404
    default_message = "original not found"


class UnsupportedImage(ImageServerError):
    status = 415
    deterministic = True
    default_message = "the original is not an image that can be decoded"


class SourceUnavailable(ImageServerError):
    status = 502
    retryable = True
    default_message = "the source of the original is unavailable"


class SourceNotFoundRecently(SourceNotFound):
    """Answered from the processor's memory of a 404/410 (source_not_found_ttl_s)."""


class SourceHostPaused(SourceUnavailable):
    """The source host failed again and again: not asked for a few seconds (source_pause_s)."""

    status = 503
    default_message = "the source host is failing: not asked for a few seconds"


class SourceTimeout(ImageServerError):
    status = 504
    retryable = True
    default_message = "the original did not arrive within source_download_timeout_s"


class SourceBusy(ImageServerError):
    status = 503
    retryable = True
    default_message = "too many downloads from this source are in progress, retry later"


class SourceTooLarge(ImageServerError):
    status = 413
    deterministic = True
    default_message = "the original is larger than max_source_bytes"


class ImageTooLarge(ImageServerError):
    status = 413
    deterministic = True
    default_message = "the original has more pixels than max_source_pixels"


class OutputTooLarge(ImageServerError):
    status = 413
    deterministic = True
    default_message = "the output would be larger than max_output_bytes"


class Forbidden(ImageServerError):
    status = 403
    default_message = "forbidden"


class SourceForbidden(Forbidden):
    default_message = "this source may not be fetched"


class BadSignature(Forbidden):
    default_message = "missing or invalid signature"


class BrokerUnavailable(ImageServerError):
    status = 503
    retryable = True
    default_message = "the job queue is unavailable"


class BrokerBlocked(BrokerUnavailable):
    default_message = (
        "the job queue is refusing work (RabbitMQ's memory or disk alarm): retry later"
    )


class QueueFull(ImageServerError):
    status = 503
    retryable = True
    default_message = "too many pending resizes, retry later"


class ResizeTimeout(ImageServerError):
    status = 504
    retryable = True
    default_message = "the resize did not finish in time"


class RenderTooSlow(ResizeTimeout):
    """libvips itself ran past the job's deadline (not a job that waited its turn)."""

    retryable = False
    deterministic = True
    default_message = "the resize took longer than job_timeout_s"


class TooManyMisses(ImageServerError):
    """A client past its budget of resizes (client_miss_rate_per_s)."""

    status = 429
    retryable = True
    default_message = "too many new images asked by this client, retry later"


class DiskFull(ImageServerError):
    """A disk of this host has no space left (the janitor keeps min_free_disk_share free)."""

    status = 503
    retryable = True
    retry_after_s = 30
    default_message = "this host's disk is full: retry later"


class OutputGone(ImageServerError):
    """A processor of this host wrote the output to the cache and said so, and it
    was removed before this frontend could open it (a purge, in between)."""

    status = 503
    retryable = True
    default_message = "the output was removed as it was made: retry"


class StorageUnavailable(ImageServerError):
    status = 503
    retryable = True
    default_message = "object storage is unavailable"


class StorageRefused(ImageServerError):
    """Object storage answered, and will keep answering, no (bad credentials, bad key)."""

    default_message = "object storage refused the request"


class MessageDecodeError(ImageServerError):
    default_message = "message cannot be decoded"


def _all_subclasses(cls: type[ImageServerError]) -> list[type[ImageServerError]]:
    found = []
    for sub in cls.__subclasses__():
        found.append(sub)
        found.extend(_all_subclasses(sub))
    return found


def from_name(name: str, message: str) -> ImageServerError:
    """Rebuild an error that crossed the queue by class name."""
    known: list[type[ImageServerError]] = [ImageServerError, *_all_subclasses(ImageServerError)]
    for cls in known:
        if cls.__name__ == name:
            return cls(message)
    return ImageServerError(message)
