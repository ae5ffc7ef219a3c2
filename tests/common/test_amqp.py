"""Connection parameters for a RabbitMQ cluster: amqp_url's credentials and vhost on
every node of amqp_nodes, and the order in which a process tries them."""

from __future__ import annotations

import socket
import zlib

import pika
import pytest

from common import amqp
from common.errors import ConfigError
from tests.support.settings import configured

URL = "amqp://user:secret@rabbit.internal:5672/image-server-production"
NODES = ["rabbit-1.internal:5672", "rabbit-2.internal:5673", "[::1]:5674"]


def addresses(parameters: list[pika.URLParameters]) -> list[tuple[str, int]]:
    return [(p.host, p.port) for p in parameters]


def test_every_node_gets_the_credentials_and_the_vhost_of_amqp_url() -> None:
    settings = configured(amqp_url=URL, amqp_nodes=NODES)
    parameters = amqp.node_parameters(settings)
    assert addresses(parameters) == [
        ("rabbit-1.internal", 5672), ("rabbit-2.internal", 5673), ("::1", 5674)
    ]  # fmt: skip
    assert {(p.credentials.username, p.credentials.password) for p in parameters} == {
        ("user", "secret")
    }
    assert {p.virtual_host for p in parameters} == {"image-server-production"}


def test_without_amqp_nodes_there_is_one_node_amqp_urls() -> None:
    settings = configured(amqp_url=URL)
    assert addresses(amqp.node_parameters(settings)) == [("rabbit.internal", 5672)]


def test_a_program_starts_at_its_own_node_then_the_next_one_each_time() -> None:
    settings = configured(amqp_url=URL, amqp_nodes=NODES)
    rotation = amqp.NodeRotation()
    rotation.identify("processor", 1)
    first = (1 + zlib.crc32(socket.gethostname().encode())) % 3
    orders = [addresses(rotation.rotation(settings)) for _ in range(4)]
    starts = [[node[0] for node in addresses(amqp.node_parameters(settings))].index(order[0][0])
              for order in orders]  # fmt: skip
    assert starts == [first, (first + 1) % 3, (first + 2) % 3, first]
    assert all(sorted(order) == sorted(orders[0]) for order in orders)  # every node, each time
    assert rotation.connection_name == f"processor_1@{socket.gethostname()}"
    other = amqp.NodeRotation()
    other.identify("processor", 2)  # the next process of a host starts one node further
    assert addresses(other.rotation(settings))[0] == orders[1][0]


@pytest.mark.parametrize("node", ["rabbit-1", "rabbit-1:", "amqp://rabbit-1:5672", "a b:1"])
def test_a_node_that_is_not_host_and_port_is_refused(node: str) -> None:
    with pytest.raises(ConfigError, match=r"amqp_nodes\[0\]"):
        configured(amqp_url=URL, amqp_nodes=[node])


def test_a_closed_connection_or_a_refused_publish_is_logged_with_what_rabbitmq_said() -> None:
    forced = pika.exceptions.ConnectionClosedByBroker(320, "CONNECTION_FORCED - shutdown")
    assert amqp.why_closed(forced) == "closed by RabbitMQ: 320 CONNECTION_FORCED - shutdown"
    differs = pika.exceptions.ChannelClosedByBroker(406, "PRECONDITION_FAILED - inequivalent arg")
    assert "run `image-server queues`" in amqp.why_closed(differs)
    assert "refused a publish" in amqp.why_closed(pika.exceptions.NackError([]))
    assert amqp.why_closed(pika.exceptions.StreamLostError("eof")) == "StreamLostError"
