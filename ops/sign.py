"""The signing tools of `image-server`: print a signed image path, purge or
pre-generation, with the first key of the config's list (common/signing.py
signs and verifies)."""

from __future__ import annotations

import argparse

from common import program
from common.errors import SourceForbidden
from common.settings import Settings
from common.signing import pregenerate_message, purge_message, signature, signed_url, with_query
from common.sources import normalised_source


def _tool(
    description: str,
    prog: str | None,
    argv: list[str] | None,
    path_help: str,
    with_outputs: bool = False,
) -> tuple[argparse.Namespace, Settings]:
    """The arguments and settings of a signing tool (`image-server sign...`)."""
    parser = program.argument_parser(description, prog)
    parser.add_argument("path", help=path_help)
    if with_outputs:
        parser.add_argument("outputs", help="comma-separated output names: x300.jpg,w500.webp")
    parser.add_argument("--source", default=None, help="the source query parameter, if any")
    args = parser.parse_args(argv)
    settings = program.load_settings(args, announce=True)
    if args.source is not None:  # signed as the frontends read it
        try:
            args.source = normalised_source(args.source, settings.allowed_source_query)
        except SourceForbidden as exc:
            parser.error(f"--source: {exc.message}")
    return args, settings


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
    print(with_query(args.path, signed, args.source))


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
    print(with_query(args.path, signed, args.source, outputs=args.outputs))
