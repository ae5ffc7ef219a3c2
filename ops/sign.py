"""The signing tools of `image-server`: print a signed image path, purge or
pre-generation, with the first key of the config's list (common/signing.py
signs and verifies)."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from common import program
from common.errors import BadRequest, ImageServerError
from common.settings import Settings
from common.signing import pregenerate_message, purge_message, signature, signed_url, with_query
from common.sources import normalised_source
from common.urls import check_allowed, parse_image_path, parse_output, parse_path


def _tool(
    description: str,
    prog: str | None,
    argv: list[str] | None,
    path_help: str,
    check: Callable[[argparse.Namespace, Settings], None],
    with_outputs: bool = False,
) -> tuple[argparse.Namespace, Settings]:
    """The arguments and settings of a signing tool (`image-server sign...`), each
    checked as the frontends check a request by `check` (a usage error otherwise):
    what is signed is what they will answer."""
    parser = program.argument_parser(description, prog)
    parser.add_argument("path", help=path_help)
    if with_outputs:
        parser.add_argument("outputs", help="comma-separated output names: x300.jpg,w500.webp")
    parser.add_argument("--source", default=None, help="the source query parameter, if any")
    args = parser.parse_args(argv)
    settings = program.load_settings(args, announce=True)
    if "?" in args.path or "://" in args.path:
        parser.error(f"{args.path!r}: give the path alone (/user/avatar/1/w500.jpg); the tool "
                     "adds the query, and --source gives a source URL")  # fmt: skip
    try:
        check(args, settings)
        if args.source is not None:  # signed as the frontends read it
            args.source = normalised_source(args.source, settings.allowed_source_query)
    except ImageServerError as exc:
        parser.error(f"{exc.message} (the frontends would answer {exc.status})")
    return args, settings


def _an_output(args: argparse.Namespace, settings: Settings) -> None:
    request = parse_path(args.path, args.source, settings.default_quality)
    check_allowed(request.output, settings.whitelisted_extensions, settings.maximum_width)


def _an_image(args: argparse.Namespace, settings: Settings) -> None:
    parse_image_path(args.path)


def _an_image_and_outputs(args: argparse.Namespace, settings: Settings) -> None:
    parse_image_path(args.path)
    names = [name for name in args.outputs.split(",") if name]
    if not names:
        raise BadRequest("name the outputs: x300.jpg,w500.webp")
    for name in names:
        check_allowed(parse_output(name), settings.whitelisted_extensions, settings.maximum_width)


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
        _an_output,
    )
    key = _first_key(settings.signing_keys, args.env, "signing_keys", "URLs need no signature")
    print(signed_url(key, args.path, args.source))


def sign_purge_main(argv: list[str] | None = None, prog: str | None = None) -> None:
    """`image-server sign-purge /<model>/<imageType>/<id> [--source URL]` (for DELETE)."""
    args, settings = _tool(
        "Print the signed path of a purge (DELETE)",
        prog,
        argv,
        "/<model>/<imageType>/<id>",
        _an_image,
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
        _an_image_and_outputs,
        with_outputs=True,
    )
    key = _first_key(settings.pregenerate_keys, args.env, "pregenerate_keys", "POST is off")
    signed = signature(key, pregenerate_message(args.path, args.outputs), args.source)
    print(with_query(args.path, signed, args.source, outputs=args.outputs))
