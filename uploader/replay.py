"""Move dead-lettered uploads back into image.upload, their attempts reset.

    image-server replay-uploads -e production [--limit N]

Each message is republished (confirmed) before it is acked on the
dead-letter queue, so a crash midway loses nothing (at worst one is queued
twice; uploads are idempotent).
"""

from __future__ import annotations

import dataclasses
import logging

from common import amqp, program
from common.errors import MessageDecodeError
from common.messages import UploadJob
from common.settings import Settings

log = logging.getLogger("uploader.replay")


def replay(settings: Settings, limit: int | None = None) -> int:
    """Replay up to `limit` dead uploads (all when None); returns how many moved."""
    connection = amqp.blocking_connection(settings)
    moved = 0
    try:
        channel = connection.channel()
        amqp.declare(channel, amqp.upload_queues(settings))
        channel.confirm_delivery()
        while limit is None or moved < limit:
            method, _properties, body = channel.basic_get(amqp.UPLOAD_DEAD_QUEUE)
            if method is None:
                break
            target = amqp.UPLOAD_QUEUE
            try:
                job = UploadJob.decode(body)
                body = dataclasses.replace(job, attempt=0).encode()
                if job.file:  # by reference: only its host's uploader can read the file
                    target = amqp.host_upload_queue(job.host)
                    amqp.declare(channel, amqp.upload_queues(settings, job.host))
            except MessageDecodeError:
                log.warning("replaying an undecodable message as it is")
            channel.basic_publish("", target, body, amqp.persistent())
            channel.basic_ack(method.delivery_tag)
            moved += 1
    finally:
        connection.close()
    return moved


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    parser = program.argument_parser(
        "Put dead-lettered uploads back in image.upload (or in their host's queue)", prog
    )
    parser.add_argument("--limit", type=int, default=None, help="replay at most this many")
    args = parser.parse_args(argv)
    settings = program.load_settings(args, announce=True)
    program.configure_logging(settings, "replay")
    print(f"replayed {replay(settings, args.limit)} upload(s) from {amqp.UPLOAD_DEAD_QUEUE}")


if __name__ == "__main__":
    main()
