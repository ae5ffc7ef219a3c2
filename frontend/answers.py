"""The headers of an image answer and the conditional-request check, shared by both paths."""

from __future__ import annotations

import asyncio
import email.utils
import functools
import time
from collections.abc import Iterator

from tornado.httputil import HTTPConnection, HTTPHeaders

from common.urls import ImageRequest
from frontend.cache import CachedFile

# Sent with every answer: error bodies echo parts of the request, and no
# browser may guess that they are HTML.
NO_SNIFF = ("X-Content-Type-Options", "nosniff")

# A body larger than this goes out on its own: Tornado copies a body sent with the
# headers into their buffer, but references a large one sent alone.
SEPARATE_BODY_BYTES = 65536
# A large body is handed to Tornado this much at a time, each piece once the one
# before has left: a client that stops reading holds one piece, not the body.
SEND_CHUNK_BYTES = 262144


def send_body(
    connection: HTTPConnection, body: bytes | memoryview, timeout_s: float
) -> asyncio.Future[None]:
    """Write `body` (after its headers) piece by piece; a piece not taken by the
    client within `timeout_s` closes the connection (nginx's send_timeout). The
    future is done when the body has left, or the connection was closed."""
    sent: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    pieces = _pieces(body)

    def next_piece(_: object = None) -> None:
        piece = next(pieces, None)
        if piece is None or connection.stream.closed():  # type: ignore[attr-defined]
            if not sent.done():
                sent.set_result(None)
            return
        written = connection.write(piece)  # type: ignore[arg-type]
        late = asyncio.get_running_loop().call_later(timeout_s, cut_off)
        written.add_done_callback(lambda _: late.cancel())
        written.add_done_callback(next_piece)

    def cut_off() -> None:
        # A closed connection forgets its pending write: it never completes.
        connection.close()  # type: ignore[attr-defined]
        if not sent.done():
            sent.set_result(None)

    next_piece()
    return sent


def _pieces(body: bytes | memoryview) -> Iterator[memoryview]:
    view = memoryview(body)
    return (
        view[start : start + SEND_CHUNK_BYTES] for start in range(0, len(view), SEND_CHUNK_BYTES)
    )


def image_headers(cached: CachedFile, request: ImageRequest, max_age_s: int) -> dict[str, str]:
    headers = {
        NO_SNIFF[0]: NO_SNIFF[1],
        "Content-Type": request.output.content_type,
        "Cache-Control": f"public, max-age={max_age_s}",
        "ETag": cached.etag,
        "Last-Modified": cached.last_modified,
        # A CDN in front (Fastly, Varnish xkey) purges every output of an image,
        # or of an image type, by one of these keys.
        "Surrogate-Key": surrogate_keys(request),
    }
    if request.varies:
        headers["Vary"] = "Accept"
    return headers


def date_header(now_s: float) -> str:
    """The Date header for `now_s`, formatted once a second."""
    return _date_of_second(int(now_s))


@functools.lru_cache(maxsize=4)
def _date_of_second(second: int) -> str:
    return email.utils.formatdate(second, usegmt=True)


def surrogate_keys(request: ImageRequest) -> str:
    """The image's own key, then its type's: a CDN purges either at once."""
    image = request.image
    return f"{image.kind}/{image.id} {image.kind}"


def not_modified(cached: CachedFile, request_headers: HTTPHeaders) -> bool:
    """True when the client's copy (If-None-Match, else If-Modified-Since) is current."""
    if_none_match = request_headers.get("If-None-Match")
    if if_none_match is not None:
        tags = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
        return "*" in tags or cached.etag in tags
    if_modified_since = request_headers.get("If-Modified-Since")
    if if_modified_since is not None:
        try:
            since = email.utils.parsedate_to_datetime(if_modified_since).timestamp()
        except (TypeError, ValueError):
            return False  # unparsable dates are ignored, as RFC 9110 says
        if since > time.time():
            return False  # a date in the future is no date the client saw (nginx does so too)
        return int(cached.mtime_s) <= since
    return False
