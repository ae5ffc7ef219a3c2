"""Queue names, their arguments and connection parameters, declared in one place."""

from __future__ import annotations

from typing import Any

import pika
from pika.adapters.blocking_connection import BlockingChannel

from common.config import Settings

RESIZE_QUEUE = "image.resize"
RESIZE_DEAD_QUEUE = "image.resize.dead"
DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"


def resize_queue_arguments(settings: Settings) -> dict[str, Any]:
    # A quorum queue counts deliveries, so a job that kills every worker that
    # takes it is dead-lettered after resize_delivery_limit attempts instead
    # of looping forever; reject-publish bounds the backlog (the frontend
    # answers 503 when its publish is nacked).
    return {
        "x-queue-type": "quorum",
        "x-max-length": settings.resize_queue_max_length,
        "x-overflow": "reject-publish",
        "x-delivery-limit": settings.resize_delivery_limit,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": RESIZE_DEAD_QUEUE,
    }


def connection_parameters(settings: Settings) -> pika.URLParameters:
    params = pika.URLParameters(settings.amqp_url)
    params.connection_attempts = 1
    params.socket_timeout = 5
    params.blocked_connection_timeout = 30
    return params


def declare_resize_queues(channel: BlockingChannel, settings: Settings) -> None:
    """Declare the resize queue and its dead-letter queue (blocking channel)."""
    channel.queue_declare(RESIZE_DEAD_QUEUE, durable=True)
    channel.queue_declare(RESIZE_QUEUE, durable=True, arguments=resize_queue_arguments(settings))


def persistent(
    correlation_id: str | None = None, reply_to: str | None = None
) -> pika.BasicProperties:
    return pika.BasicProperties(
        delivery_mode=pika.DeliveryMode.Persistent,
        correlation_id=correlation_id,
        reply_to=reply_to,
    )
