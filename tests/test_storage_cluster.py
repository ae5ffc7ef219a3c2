"""Object storage that survives a node: SeaweedFS with every object on two of its
three volume servers; the one that holds the most of what is stored is killed under
load and brought back. Reads go on, new uploads go on (retried if need be), none is
lost; the figures are printed (`pytest -s`)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import minio
import pytest

from common import amqp
from tests.support.load import Load
from tests.support.origin import Origin
from tests.support.rabbitmq import Vhost
from tests.support.s3 import s3_client
from tests.support.seaweed_cluster import SeaweedCluster
from tests.support.settings import object_key_of
from tests.support.stack import Stack
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.stack, pytest.mark.long, pytest.mark.timeout(600)]

DOWN_S = 15.0
BUCKET = "images"


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[SeaweedCluster]:
    cluster = SeaweedCluster(tmp_path)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def storage_stack(storage: SeaweedCluster, tmp_path: Path, origin: Origin) -> Iterator[Stack]:
    vhost = Vhost()
    stack = Stack(
        tmp_path / "stack", vhost, origin, upload_rate_per_s=1000.0, **storage.config(BUCKET)
    )
    try:
        yield stack.start(processors=2, uploader=True)
    finally:
        stack.stop()
        vhost.delete()


def listed(client: minio.Minio) -> dict[str, int]:
    """Every object in the bucket and its size (the filer's metadata)."""
    return {
        str(item.object_name): int(item.size or 0)
        for item in client.list_objects(BUCKET, recursive=True)
    }


def unreadable(client: minio.Minio, objects: dict[str, int]) -> list[str]:
    """Objects that cannot be read whole from the volume servers, and why. Each is
    read here for the first time since it was stored: no cache of the gateway holds it."""
    failed = []
    for key, size in objects.items():
        try:
            response = client.get_object(BUCKET, key)
            body = response.read()
            response.close()
        except Exception as exc:  # noqa: BLE001 - every failure is counted
            failed.append(f"{key}: {type(exc).__name__} {exc}"[:200])
            continue
        if len(body) != size:
            failed.append(f"{key}: {len(body)} bytes of {size}")
    return failed


def test_a_volume_server_lost_under_load_loses_no_object(
    storage: SeaweedCluster, storage_stack: Stack, origin: Origin
) -> None:
    stack = storage_stack
    client = s3_client(storage.endpoint, storage.ACCESS_KEY, storage.SECRET_KEY)
    load = Load(stack, origin, "replicated/img")
    assert set(load.make_hits()) == {200}

    with load:
        time.sleep(3)
        before = listed(client)  # stored by the uploader under load, never read yet
        holders = storage.holders(BUCKET, list(before))
        victim = max(holders, key=lambda index: holders[index])
        lost_at = time.monotonic()
        storage.kill(victim)
        failed_reads = unreadable(client, before)
        time.sleep(max(0.0, DOWN_S - (time.monotonic() - lost_at)))
        made_while_down = len(load.outputs_answered())
        storage.start_volume(victim)
        time.sleep(5)
    failed = [answer for answer in load.since(lost_at) if answer.status != 200]

    keys = {object_key_of(stack.settings, path) for path in load.outputs_answered()}
    missing_at_end = len(keys - set(listed(client)))
    wait_until(lambda: keys <= set(listed(client)), timeout_s=120,
               what="every output answered in object storage")  # fmt: skip
    after = listed(client)
    failed_after = unreadable(client, after)
    retried = stack.log("uploader").count("failed (")
    print(
        f"\nvolume server {victim} of 3 (a copy of {holders[victim]} of the {len(before)} "
        f"objects stored) lost for {DOWN_S:.0f} s under load: {len(load.answers)} requests, "
        f"{len(failed)} failed; {len(before)} objects stored before read while it was down, "
        f"{len(failed_reads)} failed; {len(load.outputs_answered())} outputs answered "
        f"({made_while_down} by the node's return), {missing_at_end} not yet stored when the "
        f"load stopped, all stored afterwards; {len(after)} objects in the bucket afterwards, "
        f"{len(failed_after)} unreadable; upload attempts that failed: {retried}"
    )
    assert holders[victim] > 0
    assert failed_reads == [], failed_reads[:5]
    assert failed == [], failed[:5]
    assert set(before) <= set(after) and failed_after == [], failed_after[:5]
    assert stack.vhost.message_count(amqp.UPLOAD_DEAD_QUEUE) == 0
