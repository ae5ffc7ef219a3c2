"""The local RabbitMQ: its management API, a fresh vhost per stack, rabbitmqctl."""

from __future__ import annotations

import json
import subprocess
import urllib.parse
import uuid
from typing import Any

import pika
import urllib3

MANAGEMENT = "http://127.0.0.1:15672/api"
_http = urllib3.PoolManager(headers=urllib3.make_headers(basic_auth="guest:guest"))


def management(method: str, path: str, body: Any = None) -> Any:
    response = _http.request(
        method,
        f"{MANAGEMENT}{path}",
        body=json.dumps(body) if body is not None else None,
        headers={**_http.headers, "content-type": "application/json"},
    )
    assert response.status < 300, f"{method} {path}: {response.status} {response.data!r}"
    return json.loads(response.data) if response.data else None


class Vhost:
    """A fresh RabbitMQ vhost, so that stacks never see each other's queues."""

    def __init__(self) -> None:
        self.name = f"test-{uuid.uuid4().hex[:12]}"
        quoted = urllib.parse.quote(self.name, safe="")
        self._path = f"/vhosts/{quoted}"
        management("PUT", self._path, {})
        management(
            "PUT", f"/permissions/{quoted}/guest", {"configure": ".*", "write": ".*", "read": ".*"}
        )
        self.amqp_url = f"amqp://guest:guest@127.0.0.1:5672/{quoted}"

    def connect(self) -> pika.BlockingConnection:
        return pika.BlockingConnection(pika.URLParameters(self.amqp_url))

    def message_count(self, queue: str) -> int:
        """Messages ready in `queue`, asked of the broker itself (no stats delay)."""
        connection = self.connect()
        try:
            declared = connection.channel().queue_declare(queue, passive=True)
            return int(declared.method.message_count)
        finally:
            connection.close()

    def delete(self) -> None:
        management("DELETE", self._path)


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=120)
