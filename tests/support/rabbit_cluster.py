"""A three-node RabbitMQ cluster on this machine, from Debian's rabbitmq-server.

Each node has its own name, ports, data directory and configuration; they share
one Erlang cookie (a HOME of their own, so the machine's broker and its cookie
are left alone) and are joined with `rabbitmqctl join_cluster`. The nodes run as
the test's own processes: `kill` is a node lost (SIGKILL), `start` brings it
back with its data, and it rejoins the cluster by itself.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import time
import urllib.parse
import uuid
from pathlib import Path
from typing import Any

import pika

from tests.support.ports import free_port
from tests.support.rabbitmq import Vhost

RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")
# rabbitmqctl's own Erlang distribution listens in this range: a node must not.
_CLI_PORTS = range(35672, 35683)


def _node_port() -> int:
    while True:
        port = free_port()
        if port not in _CLI_PORTS and port + 1 not in _CLI_PORTS:
            return port


@dataclasses.dataclass
class Node:
    name: str  # the Erlang node name, e.g. imgtest-1a2b3c-1@localhost
    port: int  # AMQP
    dist_port: int  # Erlang distribution (the cluster's own traffic)
    base: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


class RabbitCluster:
    def __init__(self, workdir: Path, size: int = 3) -> None:
        self.workdir = workdir
        tag = uuid.uuid4().hex[:6]
        self.home = workdir / "home"  # the shared Erlang cookie
        self.home.mkdir(parents=True)
        cookie = self.home / ".erlang.cookie"
        cookie.write_text(f"IMAGESERVERTEST{tag.upper()}")
        cookie.chmod(0o400)
        self.nodes = [
            Node(f"imgtest-{tag}-{index}@localhost", _node_port(), _node_port(),
                 workdir / f"node{index}")
            for index in range(1, size + 1)
        ]  # fmt: skip

    # --- the nodes ------------------------------------------------------------

    def _environment(self, node: Node) -> dict[str, str]:
        return {
            **os.environ,
            "HOME": str(self.home),
            "RABBITMQ_CONF_ENV_FILE": "/dev/null",  # not the machine broker's settings
            "RABBITMQ_NODENAME": node.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(node.port),
            "RABBITMQ_DIST_PORT": str(node.dist_port),
            "RABBITMQ_MNESIA_BASE": str(node.base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(node.base / "log"),
            "RABBITMQ_PID_FILE": str(node.base / "pid"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(node.base / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILES": str(node.base / "conf.d"),
            "RABBITMQ_CONFIG_FILE": str(node.base / "rabbitmq"),
        }

    def ctl(self, node: Node, *args: str, timeout_s: float = 60) -> str:
        """rabbitmqctl against `node`; its output."""
        done = subprocess.run(
            [str(RABBITMQ_BIN / "rabbitmqctl"), "-q", "-n", node.name, *args],
            env=self._environment(node), capture_output=True, timeout=timeout_s, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise AssertionError(f"rabbitmqctl {' '.join(args)} on {node.name}: {done.stderr!r}")
        return done.stdout.decode()

    def start(self, node: Node) -> None:
        (node.base / "conf.d").mkdir(parents=True, exist_ok=True)
        # As scripts/ensure-rabbitmq.sh configures the machine's broker.
        (node.base / "conf.d" / "50-image-server.conf").write_text(
            "raft.wal_max_size_bytes = 67108864\n"
        )
        (node.base / "enabled_plugins").write_text("[].\n")
        log = open(node.base / "server.log", "ab")  # noqa: SIM115 - lives as long as the node
        node.process = subprocess.Popen(
            [str(RABBITMQ_BIN / "rabbitmq-server")],
            env=self._environment(node), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        log.close()
        self._await_startup(node)

    def _await_startup(self, node: Node) -> None:
        give_up = time.monotonic() + 90
        while time.monotonic() < give_up:
            assert node.process is not None
            if node.process.poll() is not None:
                log = (node.base / "server.log").read_text()
                raise AssertionError(f"{node.name} exited: {log}")
            try:
                self.ctl(node, "await_startup", "--timeout", "30")
                return
            except AssertionError:  # not registered with epmd yet
                time.sleep(0.5)
        raise AssertionError(f"{node.name} did not start")

    def form(self) -> None:
        """Start every node and join the others to the first."""
        first, *others = self.nodes
        self.start(first)
        for node in others:
            self.start(node)
            self.ctl(node, "stop_app")
            self.ctl(node, "join_cluster", first.name)
            self.ctl(node, "start_app")
        running = self.running_nodes(first)
        assert running == {node.name for node in self.nodes}, running

    def running_nodes(self, asked: Node) -> set[str]:
        status = json.loads(self.ctl(asked, "cluster_status", "--formatter", "json"))
        return set(status["running_nodes"])

    def kill(self, node: Node) -> None:
        """The node lost: SIGKILL to its Erlang VM (no goodbye to its peers or clients)."""
        assert node.process is not None
        os.killpg(node.process.pid, signal.SIGKILL)
        node.process.wait(30)
        node.process = None

    def stop(self) -> None:
        for node in self.nodes:
            if node.process is not None and node.process.poll() is None:
                os.killpg(node.process.pid, signal.SIGKILL)
                node.process.wait(30)
            node.process = None

    def up(self) -> list[Node]:
        return [node for node in self.nodes if node.process is not None]

    # --- what runs on it --------------------------------------------------------

    def add_vhost(self, name: str) -> str:
        """A vhost for guest (allowed from loopback); the amqp_url for it."""
        node = self.up()[0]
        self.ctl(node, "add_vhost", name)
        self.ctl(node, "set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        return f"amqp://guest:guest@{node.address}/{urllib.parse.quote(name, safe='')}"

    def queues(self, vhost: str) -> dict[str, dict[str, Any]]:
        """Each queue of `vhost`: its type, leader (quorum) or home node (classic),
        members and ready messages."""
        node = self.up()[0]
        rows = json.loads(
            self.ctl(node, "list_queues", "-p", vhost, "name", "type", "leader", "members",
                     "messages", "--formatter", "json")
        )  # fmt: skip
        return {row["name"]: row for row in rows}

    def connections(self, vhost: str) -> dict[str, int]:
        """How many client connections of `vhost` each node holds."""
        rows = json.loads(
            self.ctl(self.up()[0], "list_connections", "vhost", "name", "--formatter", "json")
        )
        by_address = {node.address: node.name for node in self.nodes}
        counts = {node.name: 0 for node in self.nodes}
        for row in rows:
            if row["vhost"] == vhost:  # named "<client address> -> <node's address>"
                counts[by_address[row["name"].split(" -> ")[1]]] += 1
        return counts

    def connect(self, vhost_url: str, node: Node) -> pika.BlockingConnection:
        parts = urllib.parse.urlsplit(vhost_url)
        url = parts._replace(netloc=f"guest:guest@{node.address}").geturl()
        return pika.BlockingConnection(pika.URLParameters(url))


class ClusterVhost(Vhost):
    """A vhost of the cluster, for a Stack: its amqp_url names the first node,
    amqp_nodes (the stack's config) every node."""

    def __init__(self, cluster: RabbitCluster) -> None:  # noqa: D107 - not Vhost's broker
        self.cluster = cluster
        self.name = f"test-{uuid.uuid4().hex[:12]}"
        self.amqp_url = cluster.add_vhost(self.name)

    @property
    def nodes(self) -> list[str]:
        return [node.address for node in self.cluster.nodes]

    def connect(self) -> pika.BlockingConnection:
        """To a node that is up."""
        return self.cluster.connect(self.amqp_url, self.cluster.up()[0])

    def delete(self) -> None:
        if self.cluster.up():
            self.cluster.ctl(self.cluster.up()[0], "delete_vhost", self.name)
