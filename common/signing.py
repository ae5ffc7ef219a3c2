"""Signed URLs: HMAC-SHA256 of the exact path (and `source`), checked in constant time.

With `signing_keys` set, every request must carry `signature=<sig>` in its
query; several keys may be valid at once, so keys can be rotated: add the
new one, re-sign, then remove the old one. To sign from a shell:

    .venv/bin/python -m common.signing -e production /user/avatar/1/w500.jpg
    .venv/bin/python -m common.signing -e production /a/b/1/x50.jpg --source https://cdn.example.com/x.jpg
    .venv/bin/python -m common.signing -e production --purge /user/avatar/1   # for DELETE
    .venv/bin/python -m common.signing -e production --pregenerate x50.jpg,w500.webp /user/avatar/1

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
    query = {"signature": signature(key, path, source)}
    if source is not None:
        query["source"] = source
    return f"{path}?{urlencode(query)}"


def main(argv: list[str] | None = None) -> None:
    from common import program

    parser = program.argument_parser("Print the signed form of an image URL path")
    parser.add_argument("path", help="/<model>/<imageType>/<id>/<output>")
    parser.add_argument("--source", default=None, help="the source query parameter, if any")
    parser.add_argument("--purge", action="store_true", help="sign DELETE /<model>/<type>/<id>")
    parser.add_argument(
        "--pregenerate",
        metavar="OUTPUTS",
        help="sign POST /<model>/<type>/<id>?outputs=OUTPUTS (comma-separated output names)",
    )
    args = parser.parse_args(argv)
    settings = program.load_settings(args)
    if args.pregenerate is not None:
        if not settings.pregenerate_keys:
            raise SystemExit(f"config {args.env!r} has no pregenerate_keys: POST is off")
        message = pregenerate_message(args.path, args.pregenerate)
        query = {
            "outputs": args.pregenerate,
            "signature": signature(settings.pregenerate_keys[0], message, args.source),
        }
        if args.source is not None:
            query["source"] = args.source
        print(f"{args.path}?{urlencode(query)}")
        return
    if args.purge:
        if not settings.purge_keys:
            raise SystemExit(f"config {args.env!r} has no purge_keys: purging is off")
        key = settings.purge_keys[0]
        query = {"signature": signature(key, purge_message(args.path), args.source)}
        if args.source is not None:
            query["source"] = args.source
        print(f"{args.path}?{urlencode(query)}")
        return
    if not settings.signing_keys:
        raise SystemExit(f"config {args.env!r} has no signing_keys: URLs need no signature")
    print(signed_url(settings.signing_keys[0], args.path, args.source))


if __name__ == "__main__":
    main()
