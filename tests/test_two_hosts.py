"""Two hosts, one RabbitMQ vhost, one object store (SeaweedFS): each host its own
frontend, processors, uploader, cache directories and ports, as two machines would."""

from __future__ import annotations

import concurrent.futures
import json
import signal
from collections.abc import Iterator
from pathlib import Path

import minio
import pytest

from common.keys import ImageRef
from common.signing import purge_message, signature
from tests.support.images import decode, photo, solid
from tests.support.origin import Origin
from tests.support.rabbitmq import Vhost
from tests.support.s3 import S3View, s3_client
from tests.support.settings import object_key_of
from tests.support.stack import Stack
from tests.support.waiting import wait_until

# Two stacks and SeaweedFS each, and waits of 30 s each: more than the global 120 s.
pytestmark = pytest.mark.timeout(300)

PURGE_KEY = "purge-secret-for-the-two-hosts-tests"


@pytest.fixture
def hosts(tmp_path: Path, origin: Origin, s3: S3View) -> Iterator[tuple[Stack, Stack]]:
    vhost = Vhost()
    pair = [
        Stack(tmp_path / name, vhost, origin, purge_keys=[PURGE_KEY], **s3.config())
        for name in ("host_a", "host_b")
    ]
    try:
        for host in pair:
            host.start(processors=2, uploader=True)
        yield pair[0], pair[1]
    finally:
        for host in pair:
            host.stop()
        vhost.delete()


def resizes(hosts: tuple[Stack, Stack], cache_key: str) -> int:
    """Resizes of `cache_key` by every processor of both hosts (either may take a job)."""
    return sum(host.resizes(cache_key) for host in hosts)


def test_an_output_made_on_one_host_is_served_by_the_other_without_a_resize(
    hosts: tuple[Stack, Stack], origin: Origin, s3: S3View
) -> None:
    a, b = hosts
    origin.add("two/hosts/1/original.jpg", photo())
    made = a.get("/two/hosts/1/w300.jpg")
    assert made.status == 200
    key = object_key_of(a.settings, "two/hosts/1/w300.jpg")
    client = s3_client(s3.endpoint)

    def stored() -> bool:
        try:
            client.stat_object(s3.bucket(), key)
        except minio.error.S3Error:
            return False
        return True

    wait_until(stored, timeout_s=30, what="the output in object storage")
    served = b.get("/two/hosts/1/w300.jpg")
    assert served.status == 200 and served.data == made.data
    assert resizes(hosts, "two/hosts/1/w300.jpg") == 1
    assert b.cached("two/hosts/1/w300.jpg").exists()


def test_a_burst_on_both_hosts_makes_at_most_one_resize_per_host(
    hosts: tuple[Stack, Stack], origin: Origin
) -> None:
    a, b = hosts
    origin.add("two/hosts/2/original.jpg", photo())
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        answers = [pool.submit(host.get, "/two/hosts/2/w400.jpg") for host in (a, b) * 10]
        results = [answer.result() for answer in answers]
    assert [r.status for r in results] == [200] * 20
    assert {decode(r.data).width for r in results} == {400}
    assert 1 <= resizes(hosts, "two/hosts/2/w400.jpg") <= 2
    assert origin.hits["two/hosts/2/original.jpg"] <= 2


def test_every_processor_of_one_host_killed_loses_no_request(
    hosts: tuple[Stack, Stack], origin: Origin
) -> None:
    """SIGKILL to every processor of host A while one of them holds a job for sure
    (it is downloading that job's original): that client, who asked host B, and
    every other one still get their image, from host B's processors."""
    a, b = hosts
    for name in ("processor_0", "processor_1"):
        b.kill(name, signal.SIGTERM)  # for now only host A's processors take jobs
    victim = "two/hosts/victim/original.jpg"
    origin.add(victim, photo(), delay_first_s=6.0)
    origin.add("two/hosts/3/original.jpg", photo())
    paths = [f"/two/hosts/3/w{width}.jpg" for width in range(100, 180)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        held = pool.submit(b.get, "/two/hosts/victim/w300.jpg")
        assert origin.started[victim].wait(10)  # a processor of host A holds its job
        for index in (0, 1):
            b.start_processor(index)
        answers = [pool.submit((a, b)[i % 2].get, path) for i, path in enumerate(paths)]
        wait_until(lambda: sum(answer.done() for answer in answers) >= 10, what="load under way")
        assert not held.done()
        for name in ("processor_0", "processor_1"):  # both at once: host A has none left
            a.processes[name].send_signal(signal.SIGKILL)
        for name in ("processor_0", "processor_1"):
            a.processes[name].wait(30)
        statuses = [answer.result().status for answer in answers]
        victim_answer = held.result()
    assert statuses == [200] * len(paths)  # host B's processors took every job
    assert victim_answer.status == 200 and decode(victim_answer.data).width == 300
    # A's job was redelivered and made again (the first download never ended); a
    # third download is the other processor of A taking it in the instant between
    # the two signals.
    assert origin.hits[victim] >= 2
    assert b.get("/two/hosts/3/w500.jpg").status == 200
    assert a.get("/two/hosts/3/w501.jpg").status == 200  # asked on A, made on B


def test_a_purge_on_one_host_makes_both_hosts_and_the_store_forget_the_image(
    hosts: tuple[Stack, Stack], origin: Origin, s3: S3View
) -> None:
    a, b = hosts
    origin.add("two/purge/1/original.jpg", photo())  # 1600x1000
    client = s3_client(s3.endpoint)
    prefix = ImageRef("two", "purge", "1").object_prefix(a.settings)

    def stored_objects() -> list[str]:
        found = client.list_objects(s3.bucket(), prefix=prefix, recursive=True)
        return sorted(str(item.object_name) for item in found)

    # Each object is put once, and stored before the next request: a put still
    # on its way (a second download's original, a second resize's upload) would
    # land after the purge and bring the object back.
    assert a.get("/two/purge/1/w300.jpg").status == 200
    stored = [prefix + name for name in ("original", "w300.jpg")]
    wait_until(lambda: stored_objects() == stored, timeout_s=30, what="w300 stored")
    for host in (b, a):  # b from object storage, a from its cache
        assert host.get("/two/purge/1/w300.jpg").status == 200
    assert a.get("/two/purge/1/x100.jpg").status == 200
    wanted = [prefix + name for name in ("original", "w300.jpg", "x100.jpg")]
    wait_until(lambda: stored_objects() == wanted, timeout_s=30, what="all stored")
    # The original changes at its source: a portrait now.
    origin.add("two/purge/1/original.jpg", solid(400, 800, (200, 30, 30), ".jpg"))
    path = "/two/purge/1"
    assert a.get(path, method="DELETE").status == 403  # unsigned
    wrong = signature(PURGE_KEY, path)  # an image URL's kind of signature cannot purge
    assert a.get(f"{path}?signature={wrong}", method="DELETE").status == 403
    signed = signature(PURGE_KEY, purge_message(path))
    answer = a.get(f"{path}?signature={signed}", method="DELETE")
    assert answer.status == 200, answer.data
    assert json.loads(answer.data)["objects"] == 3  # two outputs and the original
    assert stored_objects() == []
    for host in (a, b):  # every host's cache (b's by the fanout)
        wait_until(lambda: not (host.workdir / "cache/two/purge/1").exists(), what="purged")  # noqa: B023
    # The next request, on either host, is a miss made from the new original.
    for host in (b, a):
        again = host.get("/two/purge/1/w300.jpg")
        assert again.status == 200
        assert (decode(again.data).width, decode(again.data).height) == (300, 600)
