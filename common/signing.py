"""Signed URLs: HMAC-SHA256 of the exact path (and `source`), checked in constant time.

With `signing_keys` set, every request must carry `signature=<sig>` in its
query; several keys may be valid at once, so keys can be rotated: add the
new one, re-sign, then remove the old one. To sign from a shell:

    image-server sign -e production /user/avatar/1/w500.jpg
    image-server sign -e production /a/b/1/x50.jpg --source https://cdn.example.com/x.jpg
    image-server sign-purge -e production /user/avatar/1   # for DELETE
    image-server sign-pregenerate -e production /user/avatar/1 x50.jpg,w500.webp   # for POST

A purge (DELETE) is signed with `purge_keys` over "DELETE <path>", so no
image URL's signature can purge; a pre-generation (POST) with
`pregenerate_keys` over "POST <path>?outputs=<outputs>".
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import urlencode

from common.errors import BadSignature


def _message(path: str, source: str | None) -> bytes:
    text = path if source is None else f"{path}\nsource={source}"
    return text.encode("utf-8", "surrogatepass")


def signature(key: str, path: str, source: str | None = None) -> str:
    digest = hmac.new(key.encode(), _message(path, source), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def verify(keys: list[str], path: str, source: str | None, given: str | None) -> None:
    """Raise BadSignature unless `given` signs `path` and `source` with one of `keys`."""
    if not given:
        raise BadSignature("this server only answers signed URLs")
    given_bytes = given.encode("utf-8", "surrogatepass")
    matches = [
        hmac.compare_digest(signature(key, path, source).encode(), given_bytes) for key in keys
    ]
    if not any(matches):
        raise BadSignature()


def purge_message(path: str) -> str:
    """What a purge's signature signs (with purge_keys)."""
    return f"DELETE {path}"


def pregenerate_message(path: str, outputs: str) -> str:
    """What a pre-generation's signature signs (with pregenerate_keys): the outputs too,
    so that a signed POST cannot be replayed for other outputs."""
    return f"POST {path}?outputs={outputs}"


def signed_url(key: str, path: str, source: str | None = None) -> str:
    return with_query(path, signature(key, path, source), source)


def with_query(path: str, signed: str, source: str | None, **query: str) -> str:
    """`path` with its query: `query`, the signature and `source` when there is one."""
    query["signature"] = signed
    if source is not None:
        query["source"] = source
    return f"{path}?{urlencode(query)}"
