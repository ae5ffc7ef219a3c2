"""`image-server config`: check a config and print it, each key with its source, secrets masked."""

from __future__ import annotations

import dataclasses
import json
import sys

from common import program
from common.config import load_with_sources, masked
from common.errors import ConfigError
from common.settings import Settings


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    """Print the effective config of an environment, each key with its source."""
    parser = program.argument_parser("Check a config and print it, secrets masked", prog)
    args = parser.parse_args(argv)
    try:
        settings, sources = load_with_sources(args.env, args.config_dir)
    except ConfigError as exc:
        sys.exit(f"configuration error: {exc.message}")
    print(f"# environment {args.env!r}, config directory {args.config_dir}")
    for field in dataclasses.fields(Settings):
        value = masked(field.name, getattr(settings, field.name))
        print(f"{field.name} = {json.dumps(value)}  # {sources[field.name]}")


if __name__ == "__main__":
    main()
