"""`image-server host`: every program of one host under supervisord, in the
foreground (a container's command, and `make run`'s).

Processes: `IMAGE_SERVER_FRONTENDS` (default: one per core, two at least, so
that a rolling restart has one serving) and `IMAGE_SERVER_PROCESSORS` (one per
core). The queues are brought to what the code declares first (`image-server
queues`; RabbitMQ is waited for, up to --broker-wait seconds: a container may
start before its broker), then supervisord replaces this process: SIGTERM to
it drains the host as `systemctl stop` does.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from pathlib import Path

import pika.exceptions

from common import program
from common.config import masked
from common.settings import REPO_ROOT, Settings
from ops import queues

log = logging.getLogger(__name__)


def _queues_when_the_broker_answers(settings: Settings, wait_s: float) -> None:
    give_up_at = time.monotonic() + wait_s
    while True:
        try:
            queues.bring_up_to_date(settings)
            return
        except pika.exceptions.AMQPConnectionError:
            if time.monotonic() > give_up_at:
                raise
            log.info("waiting for RabbitMQ (%s)", masked("amqp_url", settings.amqp_url))
            time.sleep(2)


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    parser = program.argument_parser(__doc__.splitlines()[0].split(": ", 1)[1], prog)
    parser.add_argument(
        "--no-queues", action="store_true", help="start without declaring the queues first"
    )
    parser.add_argument(
        "--dev-services", action="store_true",
        help="start the development S3 server and sample origin too (`make run`)",
    )  # fmt: skip
    parser.add_argument(
        "--broker-wait", type=program.positive(float), default=120.0,
        help="seconds to wait for RabbitMQ before giving up",
    )  # fmt: skip
    args = parser.parse_args(argv)
    settings = program.load_settings(args)
    program.configure_logging(settings, "host")
    if not args.no_queues:
        _queues_when_the_broker_answers(settings, args.broker_wait)
    cores = os.cpu_count() or 1
    environment = {
        "IMAGE_SERVER_ENV": args.env,
        "IMAGE_SERVER_CONFIG_DIR": str(Path(args.config_dir).resolve()),
        "IMAGE_SERVER_FRONTENDS": os.environ.get("IMAGE_SERVER_FRONTENDS", str(max(2, cores))),
        "IMAGE_SERVER_PROCESSORS": os.environ.get("IMAGE_SERVER_PROCESSORS", str(cores)),
        "IMAGE_SERVER_DEV_SERVICES": "true" if args.dev_services else "false",
    }
    for directory in ("run", "log"):
        (REPO_ROOT / "var" / directory).mkdir(parents=True, exist_ok=True)
    shutil.rmtree(settings.metrics_dir, ignore_errors=True)  # figures start afresh with the host
    supervisord = str(Path(sys.executable).parent / "supervisord")
    config = str(REPO_ROOT / "supervisord.conf")
    sys.stdout.flush()
    os.execve(supervisord, [supervisord, "-n", "-c", config], {**os.environ, **environment})
