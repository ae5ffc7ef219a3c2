"""Start-up steps every program shares: arguments, config, logging."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from common import amqp, config
from common.errors import ConfigError
from common.settings import DEFAULT_CONFIG_DIR, Settings


def argument_parser(description: str, prog: str | None = None) -> argparse.ArgumentParser:
    """The options every program and tool takes (`prog`: its name in --help, e.g.
    `image-server regenerate`); each may add its own. Help shows each option's default."""
    parser = argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument(
        "-e",
        "--env",
        default=os.environ.get("IMAGE_SERVER_ENV", "development"),
        help="config/<env>.json to load (IMAGE_SERVER_ENV, else development)",
    )
    parser.add_argument(
        "--config-dir",
        type=Path,
        default=Path(os.environ.get("IMAGE_SERVER_CONFIG_DIR", DEFAULT_CONFIG_DIR)),
        help="where <env>.json is (IMAGE_SERVER_CONFIG_DIR, else the checkout's config/)",
    )
    return parser


def positive(kind: Callable[[str], float]) -> Callable[[str], float]:
    """An argparse `type`: a number of `kind` above 0 (a usage error otherwise)."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def parse_program_args(
    description: str, argv: list[str] | None = None, prog: str | None = None
) -> argparse.Namespace:
    """The arguments of a long-running program (supervisord numbers its processes)."""
    parser = argument_parser(description, prog)
    parser.add_argument(
        "--process-num", type=int, default=0, help="index of this process (supervisord numprocs)"
    )
    return parser.parse_args(argv)


def start(
    name: str, description: str, argv: list[str] | None, prog: str | None
) -> tuple[argparse.Namespace, Settings]:
    """A long-running program's first steps: its arguments, its settings, its
    log lines and its connections' name (`<name>_<N>@<host>`)."""
    args = parse_program_args(description, argv, prog)
    settings = load_settings(args)
    configure_logging(settings, name)
    amqp.identify(name, args.process_num)
    return args, settings


def load_settings(args: argparse.Namespace, announce: bool = False) -> Settings:
    """Load the config or stop the program with a message naming the bad key. A tool
    announces which environment it acts on (on stderr) before it changes anything."""
    try:
        settings = config.load(args.env, args.config_dir)
    except ConfigError as exc:
        sys.exit(f"configuration error: {exc.message}")
    if announce:
        print(f"environment {args.env!r} ({args.config_dir}/{args.env}.json)", file=sys.stderr)
    return settings


class JsonLines(logging.Formatter):
    """One JSON object per line: what a log shipper parses without a grammar.

    Fields: ts (UTC, ms), program, pid, level, logger, msg, and the record's
    `fields` (a dict given as `extra={"fields": ...}`: request and job lines).
    """

    def __init__(self, program: str) -> None:
        super().__init__()
        self._program = program

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line: dict[str, object] = {
            "ts": f"{stamp}.{int(record.msecs):03d}Z",
            "program": self._program,
            "pid": record.process,
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        line.update(getattr(record, "fields", {}))
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def configure_logging(settings: Settings, name: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLines(name))
    logging.basicConfig(level=settings.log_level, handlers=[handler])
    # pika logs every connection step, and every failed reconnect as an ERROR;
    # our programs log the one line that matters when they lose RabbitMQ.
    logging.getLogger("pika").setLevel(logging.CRITICAL)
    # libvips reports every resize step at INFO and harmless oddities of
    # originals (an unknown EXIF unit) as warnings; what fails is translated
    # and logged by processor/imaging/. Its own words only when debugging.
    if settings.log_level != "DEBUG":
        logging.getLogger("pyvips").setLevel(logging.ERROR)


def stop_event_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT: a worker finishes what it holds, then exits."""
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        logging.getLogger(__name__).info("signal %d: stopping after the work in hand", signum)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    return stop
