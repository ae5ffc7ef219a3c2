"""`image-server`: every program and every operator's tool behind one command.

    image-server [-e ENV] [--config-dir DIR] <command> [options]
    image-server <command> --help
    image-server --version

The environment is `-e`, else IMAGE_SERVER_ENV, else development; a tool says
which one it acts on before it changes anything. `-e` and `--config-dir` may
come before the command or after it. A tool exits 0 only when it did all it
was asked, 2 on a usage error (argparse's habit); RabbitMQ, object storage or
supervisord out of reach is one line on stderr, not a traceback.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import os
import sys
from collections.abc import Callable
from typing import NoReturn

import pika.exceptions

from common.errors import ImageServerError


@dataclasses.dataclass(frozen=True)
class Command:
    target: str  # "module:function", called as function(argv, prog)
    summary: str
    program: bool = False  # a long-running program (supervisord starts it)


COMMANDS = {
    "frontend": Command("frontend.__main__:main", "serve HTTP on server_port", program=True),
    "processor": Command("processor.__main__:main", "resize jobs from RabbitMQ", program=True),
    "uploader": Command("uploader.__main__:main", "store outputs in object storage", program=True),
    "status": Command("ops.status.server:main", "the host's status server", program=True),
    "janitor": Command("ops.janitor:main", "keep the disk caches in budget", program=True),
    "seaweedfs": Command(
        "ops.seaweedfs:main", "the development S3 server (SeaweedFS)", program=True
    ),
    "config": Command("ops.show_config:main", "check a config and print it, secrets masked"),
    "doctor": Command(
        "ops.doctor:main", "check the config, RabbitMQ, storage, source, disks and ports"
    ),
    "sign": Command("ops.sign:sign_main", "print a signed image URL path"),
    "sign-purge": Command("ops.sign:sign_purge_main", "print a signed purge (DELETE) path"),
    "sign-pregenerate": Command(
        "ops.sign:sign_pregenerate_main", "print a signed pre-generation (POST) path"
    ),
    "regenerate": Command(
        "ops.batch:regenerate_main", "queue outputs of the originals in object storage"
    ),
    "migrate-keys": Command(
        "ops.batch:migrate_keys_main", "move flat object keys to the partitioned layout"
    ),
    "queues": Command(
        "ops.queues:main", "declare the RabbitMQ queues, rebuilding those that differ"
    ),
    "replay-uploads": Command("uploader.replay:main", "put dead-lettered uploads back"),
    "restart": Command("ops.restart:main", "restart every process, one at a time"),
    "host": Command("ops.host:main", "run one host's programs under supervisord (containers)"),
    "version": Command("ops.cli:version", "print the version and commit (also --version)"),
}
# The options every command takes, which may also come before the command's name.
SHARED_OPTIONS = ("-e", "--env", "--config-dir")


def usage() -> str:
    width = max(map(len, COMMANDS))
    programs = [f"  {n:<{width}}  {c.summary}" for n, c in COMMANDS.items() if c.program]
    tools = [f"  {n:<{width}}  {c.summary}" for n, c in COMMANDS.items() if not c.program]
    return "\n".join(
        [
            "usage: image-server [-e ENV] [--config-dir DIR] <command> [options]",
            "       image-server <command> --help",
            "       image-server --version",
            "",
            "operator's commands:",
            *tools,
            "",
            "programs (supervisord.conf starts them):",
            *programs,
        ]
    )


def version(argv: list[str] | None = None, prog: str | None = None) -> None:
    """The package's version, and the commit of the checkout it runs from."""
    if argv:
        sys.exit(f"{prog}: takes no arguments")
    from ops.status.build_info import commit

    print(f"image-server {importlib.metadata.version('image-server')} ({commit()})")


def _function(target: str) -> Callable[[list[str], str], None]:
    module, name = target.split(":")
    function: Callable[[list[str], str], None] = getattr(importlib.import_module(module), name)
    return function


def _shared_options_first(argv: list[str]) -> tuple[list[str], list[str]]:
    """The shared options before the command's name, and what follows them."""
    leading: list[str] = []
    while argv and argv[0].split("=", 1)[0] in SHARED_OPTIONS:
        taken = 1 if "=" in argv[0] else 2
        leading, argv = leading + argv[:taken], argv[taken:]
    return leading, argv


def _usage_error(message: str) -> NoReturn:
    print(f"image-server: {message}\n\n{usage()}", file=sys.stderr)
    sys.exit(2)


def main(argv: list[str] | None = None) -> None:
    try:
        try:
            _main(sys.argv[1:] if argv is None else argv)
        finally:
            sys.stdout.flush()  # here, not at exit, where a closed pipe is a traceback
    except BrokenPipeError:  # `image-server --help | head`: the reader left, not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)


def _main(argv: list[str]) -> None:
    leading, argv = _shared_options_first(argv)
    if argv and argv[0] in ("-V", "--version"):
        argv = ["version", *argv[1:]]
    if argv and argv[0] in ("-h", "--help", "help"):
        print(usage())
        sys.exit(0)
    if not argv:
        _usage_error("name a command" if leading else "no command given")
    name, rest = argv[0], argv[1:] + leading
    command = COMMANDS.get(name)
    if command is None:
        _usage_error(f"no command {name!r}")
    prog = f"image-server {name}"
    run = _function(command.target)
    if command.program:
        run(rest, prog)  # a program logs its own failures
        return
    try:
        run(rest, prog)
    except ImageServerError as exc:
        sys.exit(f"{prog}: {exc.message}")
    except pika.exceptions.AMQPError as exc:
        sys.exit(
            f"{prog}: RabbitMQ is unreachable or refused us ({type(exc).__name__}): check amqp_url"
        )
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        sys.exit(f"{prog}: {exc.strerror or exc}{where}")
    except KeyboardInterrupt:
        sys.exit(f"{prog}: interrupted")


if __name__ == "__main__":
    main()
