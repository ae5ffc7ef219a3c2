"""Bring an environment's RabbitMQ queues to what common/amqp.py declares.

    image-server queues -e production

RabbitMQ refuses to change a queue's type or arguments in place: a program that
declares a queue differently from the one the broker has cannot start (406
PRECONDITION_FAILED). This tool declares each queue as the programs of this host
do (its own queue of uploads by reference included); a queue
that differs is rebuilt with its messages: each is moved (confirmed, then
acked) to `<name>.migrating`, the queue is deleted and declared again, and the
messages move back. A crash midway loses nothing (`<name>.migrating` keeps
them; run the tool again). Queues of an older release that nothing declares
any more are deleted once empty. `make run` runs it before it starts the
programs; a production deploy runs it before it restarts them.
"""

from __future__ import annotations

import logging

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from common import amqp, program
from common.settings import Settings
from common.spill import upload_host

MIGRATING_SUFFIX = ".migrating"


def bring_up_to_date(settings: Settings) -> list[str]:
    """Declare every queue, rebuilding those that differ; what was done, one line each."""
    this_host = upload_host(settings.spill_dir)
    connection = amqp.blocking_connection(settings)
    done: list[str] = []
    try:
        # This host's queues of uploads by reference too (another host's are its own to bring).
        declared = [*amqp.resize_queues(settings), *amqp.upload_queues(settings, this_host)]
        queues = {q.name: q for q in declared}
        for queue in queues.values():
            if not _declares(connection, queue):
                kept = _rebuild(connection, queue)
                done.append(f"{queue.name}: declared anew, {kept} message(s) kept")
            elif kept := _moved_back(connection, queue):  # a run that stopped midway
                done.append(f"{queue.name}: {kept} message(s) moved back from a stopped run")
        done += _delete_obsolete(connection, settings)
    finally:
        connection.close()
    return done


def _declares(connection: BlockingConnection, queue: amqp.QueueSpec) -> bool:
    channel = connection.channel()
    try:
        amqp.declare(channel, [queue])
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code != amqp.PRECONDITION_FAILED:
            raise
        return False
    channel.close()
    return True


def _rebuild(connection: BlockingConnection, queue: amqp.QueueSpec) -> int:
    holding = queue.name + MIGRATING_SUFFIX
    channel = connection.channel()
    channel.queue_declare(holding, durable=True, arguments=amqp.REPLICATED)
    _move(channel, queue.name, holding)
    channel.queue_delete(queue.name)
    amqp.declare(channel, [queue])
    channel.close()
    return _moved_back(connection, queue)


def _moved_back(connection: BlockingConnection, queue: amqp.QueueSpec) -> int:
    """Move the messages of `<name>.migrating`, if it exists, into the queue; delete it."""
    holding = queue.name + MIGRATING_SUFFIX
    channel = connection.channel()
    try:
        channel.queue_declare(holding, passive=True)
    except pika.exceptions.ChannelClosedByBroker:
        return 0  # no such queue: nothing was left midway
    moved = _move(channel, holding, queue.name)
    channel.queue_delete(holding)
    channel.close()
    return moved


def _move(channel: BlockingChannel, source: str, target: str) -> int:
    channel.confirm_delivery()
    moved = 0
    while True:
        method, properties, body = channel.basic_get(source)
        if method is None:
            return moved
        if properties.headers:  # a quorum queue's count of this message's deliveries
            properties.headers.pop("x-delivery-count", None)
        channel.basic_publish("", target, body, properties, mandatory=True)
        channel.basic_ack(method.delivery_tag)
        moved += 1


def _delete_obsolete(connection: BlockingConnection, settings: Settings) -> list[str]:
    """The classic delay queues before quorum ones (image.upload.delay.<ms>ms): they
    drain into image.upload by their TTL; deleted once empty."""
    done = []
    for delay_s in settings.upload_retry_delays_s:
        name = f"{amqp.OLD_UPLOAD_DELAY_PREFIX}{round(delay_s * 1000)}ms"
        channel = connection.channel()
        try:
            waiting = channel.queue_declare(name, passive=True).method.message_count
        except pika.exceptions.ChannelClosedByBroker:
            continue  # never declared, or already gone
        if waiting:
            done.append(f"{name}: obsolete, {waiting} upload(s) still drain from it by TTL")
        else:
            channel.queue_delete(name, if_empty=True)
            done.append(f"{name}: obsolete and empty, deleted")
        channel.close()
    return done


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    parser = program.argument_parser("Declare the queues, rebuilding those that differ", prog)
    args = parser.parse_args(argv)
    settings = program.load_settings(args, announce=True)
    program.configure_logging(settings, "queues")
    logging.getLogger("pika").setLevel(logging.ERROR)  # each queue looked for and not found
    done = bring_up_to_date(settings)
    print("\n".join(done) if done else "every queue is as declared")


if __name__ == "__main__":
    main()
