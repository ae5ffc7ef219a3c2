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

import argparse
import base64
import hashlib
import hmac
from typing import TYPE_CHECKING
from urllib.parse import urlencode

from common.errors import BadSignature

if TYPE_CHECKING:
    from common.config import Settings


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
    return _with_query(path, signature(key, path, source), source)


def _with_query(path: str, signed: str, source: str | None, **query: str) -> str:
    """`path` with its query: `query`, the signature and `source` when there is one."""
    query["signature"] = signed
    if source is not None:
        query["source"] = source
    return f"{path}?{urlencode(query)}"


def _tool(
    description: str,
    prog: str | None,
    argv: list[str] | None,
    path_help: str,
    with_outputs: bool = False,
) -> tuple[argparse.Namespace, Settings]:
    """The arguments and settings of a signing tool (`image-server sign...`)."""
    from common import program

    parser = program.argument_parser(description, prog)
    parser.add_argument("path", help=path_help)
    if with_outputs:
        parser.add_argument("outputs", help="comma-separated output names: x300.jpg,w500.webp")
    parser.add_argument("--source", default=None, help="the source query parameter, if any")
    args = parser.parse_args(argv)
    return args, program.load_settings(args, announce=True)


def _first_key(keys: list[str], env: str, name: str, what: str) -> str:
    if not keys:
        raise SystemExit(f"config {env!r} has no {name}: {what}")
    return keys[0]


def sign_main(argv: list[str] | None = None, prog: str | None = None) -> None:
    """`image-server sign /<model>/<imageType>/<id>/<output> [--source URL]`."""
    args, settings = _tool(
        "Print the signed form of an image URL path",
        prog,
        argv,
        "/<model>/<imageType>/<id>/<output>",
    )
    key = _first_key(settings.signing_keys, args.env, "signing_keys", "URLs need no signature")
    print(signed_url(key, args.path, args.source))


def sign_purge_main(argv: list[str] | None = None, prog: str | None = None) -> None:
    """`image-server sign-purge /<model>/<imageType>/<id> [--source URL]` (for DELETE)."""
    args, settings = _tool(
        "Print the signed path of a purge (DELETE)", prog, argv, "/<model>/<imageType>/<id>"
    )
    key = _first_key(settings.purge_keys, args.env, "purge_keys", "purging is off")
    signed = signature(key, purge_message(args.path), args.source)
    print(_with_query(args.path, signed, args.source))


def sign_pregenerate_main(argv: list[str] | None = None, prog: str | None = None) -> None:
    """`image-server sign-pregenerate /<model>/<imageType>/<id> OUTPUTS` (for POST)."""
    args, settings = _tool(
        "Print the signed path of a pre-generation (POST)",
        prog,
        argv,
        "/<model>/<imageType>/<id>",
        with_outputs=True,
    )
    key = _first_key(settings.pregenerate_keys, args.env, "pregenerate_keys", "POST is off")
    signed = signature(key, pregenerate_message(args.path, args.outputs), args.source)
    print(_with_query(args.path, signed, args.source, outputs=args.outputs))
