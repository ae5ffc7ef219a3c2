"""Queue dynamics from RabbitMQ's management API: unacknowledged messages and the
rates in and out, which a passive declare does not give.

Read with amqp_url's credentials (the user needs the `monitoring` tag) from the
first node whose API answers on amqp_management_port. RabbitMQ refreshes these
figures every 5 s (its collect_statistics_interval) and computes rates over its
own samples, so they lag by up to 10 s. The age of the oldest message is not
among them: RabbitMQ gives head_message_timestamp for classic queues only (a
quorum queue would read the message from disk); the time to drain at the
current rate stands for it.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from common import amqp
from common.settings import Settings

_COLUMNS = (
    "name,messages_unacknowledged,message_stats.publish_details.rate,message_stats.ack_details.rate"
)


@dataclasses.dataclass(frozen=True)
class QueueStats:
    unacked: int
    in_per_s: float  # published
    out_per_s: float  # acknowledged: taken and done


class QueueStatsUnavailable(Exception):
    """No node's management API answered; the message says why, node by node."""


def read(settings: Settings, timeout_s: float = 2.0) -> dict[str, QueueStats]:
    """Each queue of amqp_url's vhost, by name."""
    problems = []
    for node in amqp.node_parameters(settings):
        host = f"[{node.host}]" if ":" in node.host else node.host
        vhost = urllib.parse.quote(node.virtual_host, safe="")
        url = f"http://{host}:{settings.amqp_management_port}/api/queues/{vhost}?columns={_COLUMNS}"
        request = urllib.request.Request(url)
        credentials = f"{node.credentials.username}:{node.credentials.password}"
        request.add_header(
            "Authorization", f"Basic {base64.b64encode(credentials.encode()).decode()}"
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                rows = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            hint = ": give the user the monitoring tag" if exc.code in (401, 403) else ""
            problems.append(f"{host}: {exc.code} {exc.reason}{hint}")
            continue
        except (OSError, ValueError) as exc:
            problems.append(f"{host}: {type(exc).__name__} {exc}".strip())
            continue
        return {row["name"]: _stats(row) for row in rows}
    raise QueueStatsUnavailable("RabbitMQ's management API: " + "; ".join(problems))


def _stats(row: dict[str, Any]) -> QueueStats:
    # An idle queue has no message_stats yet, and a new one no counts.
    rates = row.get("message_stats", {})
    return QueueStats(
        unacked=int(row.get("messages_unacknowledged", 0)),
        in_per_s=float(rates.get("publish_details", {}).get("rate", 0.0)),
        out_per_s=float(rates.get("ack_details", {}).get("rate", 0.0)),
    )
