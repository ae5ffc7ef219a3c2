from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import REPO
from tests.support.in_process import InProcessFrontend
from tests.support.origin import Origin
from tests.support.rabbitmq import Vhost
from tests.support.s3 import S3Server, S3View
from tests.support.stack import Stack


def starts_programs(fixture: str) -> bool:
    """A test taking this fixture starts the programs (any `*stack`), two hosts, or S3."""
    return fixture.endswith("stack") or fixture in ("hosts", "s3", "own_s3")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that start programs are marked `stack` (by their fixtures, or by hand);
    tests marked `long` run first; tests that stop the whole RabbitMQ node run last:
    if one fails and leaves the broker down, every other result has been taken
    already. They are skipped on the workers of pytest-xdist, whose other tests the
    stopped broker would fail (`make test` runs them alone)."""
    for item in items:
        if any(starts_programs(name) for name in getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.stack)
    # The long ones first: on two workers (make test), one of them last would run
    # alone; first, they are all in the run of tests the first worker starts with.
    items.sort(key=lambda item: (bool(item.get_closest_marker("stops_broker")),
                                 not item.get_closest_marker("long")))  # fmt: skip
    if os.environ.get("PYTEST_XDIST_WORKER"):
        alone = pytest.mark.skip(reason="stops RabbitMQ: run alone, `pytest -m stops_broker`")
        for item in items:
            if item.get_closest_marker("stops_broker"):
                item.add_marker(alone)


@pytest.fixture(scope="session", autouse=True)
def rabbitmq(request: pytest.FixtureRequest) -> None:
    """The real local RabbitMQ, started by the same script `make test` uses (not
    needed when only in-process tests run: `pytest -m "not stack"`)."""
    if any(item.get_closest_marker("stack") for item in request.session.items):
        subprocess.run([str(REPO / "scripts" / "ensure-rabbitmq.sh")], check=True, timeout=180)


@pytest.fixture(scope="session")
def origin() -> Iterator[Origin]:
    server = Origin()
    yield server
    server.stop()


@pytest.fixture
def vhost() -> Iterator[Vhost]:
    """A fresh vhost of the local RabbitMQ, for a test without programs."""
    made = Vhost()
    yield made
    made.delete()


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, origin: Origin) -> Iterator[Stack]:
    """Shared stack shaped like production: two frontends on one port, two processors."""
    vhost = Vhost()
    running = Stack(tmp_path_factory.mktemp("stack"), vhost, origin, frontends=2)
    try:
        yield running.start(processors=2, status=True)
    finally:
        running.stop()
        vhost.delete()


@pytest.fixture
def make_stack(tmp_path: Path, origin: Origin) -> Iterator[Callable[..., Stack]]:
    """Builds a stack of its own for a test that kills or reconfigures things."""
    made: list[tuple[Stack, Vhost]] = []

    def build(**overrides: Any) -> Stack:
        vhost = Vhost()
        new = Stack(tmp_path / f"stack{len(made)}", vhost, origin, **overrides)
        made.append((new, vhost))
        return new

    yield build
    for built, vhost in made:
        built.stop()
        vhost.delete()


@pytest.fixture
def in_process(tmp_path: Path, origin: Origin) -> Iterator[Callable[..., InProcessFrontend]]:
    """Builds a frontend of its own in this process, its jobs made in this process
    too (tests/support/in_process.py): no RabbitMQ, no subprocess."""
    made: list[InProcessFrontend] = []

    def build(**overrides: Any) -> InProcessFrontend:
        frontend = InProcessFrontend(tmp_path / f"frontend{len(made)}", origin, **overrides)
        made.append(frontend)
        return frontend.start()

    yield build
    for frontend in made:
        frontend.stop()


@pytest.fixture(scope="session")
def shared_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = S3Server(tmp_path_factory.mktemp("s3"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def s3(shared_s3: S3Server) -> S3View:
    """Buckets of the test's own on the session's S3 server."""
    return S3View(shared_s3)


@pytest.fixture
def own_s3(tmp_path: Path) -> Iterator[S3Server]:
    """An S3 server of the test's own, for a test that stops it."""
    server = S3Server(tmp_path)
    server.start()
    yield server
    server.stop()
