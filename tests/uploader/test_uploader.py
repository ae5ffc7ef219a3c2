"""The uploader against real storage (SeaweedFS' S3 gateway, a directory) and a real RabbitMQ."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import minio
import pika
import pika.exceptions
import pytest

from common import amqp
from common.keys import sha256_hex
from common.messages import UploadJob
from common.spill import HeldUploads, Spill, upload_host
from tests.support import REPO
from tests.support.images import photo
from tests.support.origin import Origin
from tests.support.s3 import S3Server, S3View, s3_client, storage_config
from tests.support.settings import configured, object_key_of, original_key_of
from tests.support.stack import Stack
from tests.support.waiting import wait_until

PREFIX = "public/images/test"


def queued_uploads(stack: Stack) -> int:
    """Uploads in image.upload and in the stack's host's queue (by reference)."""
    host_queue = amqp.host_upload_queue(upload_host(stack.workdir / "spill"))
    return sum(stack.vhost.message_count(queue) for queue in (amqp.UPLOAD_QUEUE, host_queue))


def spilled_files(spill_dir: Path) -> list[Path]:
    """Uploads kept on disk without a message (not those held by reference)."""
    return [p for p in spill_dir.iterdir() if p.is_file() and not p.name.startswith(".")]


class StoredObjects:
    """Reads what landed in storage, through the backend's own API (S3) or the directory."""

    def __init__(self, config: dict[str, Any], s3: S3Server | S3View | None) -> None:
        self._root = Path(config["storage_path"])
        self._bucket = config.get("s3_bucket", "images")
        self._client = (
            s3_client(s3.endpoint) if s3 is not None and config["storage_backend"] == "s3" else None
        )

    def get(self, key: str) -> bytes | None:
        if self._client is None:
            path = self._root / key
            return path.read_bytes() if path.exists() else None
        try:
            response = self._client.get_object(self._bucket, key)
        except minio.error.S3Error:
            return None
        except Exception:  # the server is down or restarting
            return None
        try:
            return bytes(response.read())
        finally:
            response.close()
            response.release_conn()

    def content_type(self, key: str) -> str:
        assert self._client is not None
        return str(self._client.stat_object(self._bucket, key).content_type)


@pytest.mark.parametrize("backend", ["s3", "filesystem"])
def test_results_and_originals_land_and_other_hosts_read_them(
    backend: str,
    make_stack: Callable[..., Stack],
    origin: Origin,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    s3 = request.getfixturevalue("s3") if backend == "s3" else None
    storage = storage_config(backend, s3, tmp_path / "shared-storage")
    host_a = make_stack(**storage)
    host_a.start(processors=1, uploader=True)
    objects = StoredObjects(host_a.config, s3)
    origin.add(f"upload/{backend}/1/original.jpg", photo())

    answer = host_a.get(f"/upload/{backend}/1/w200.webp")
    assert answer.status == 200
    output_key = object_key_of(host_a.settings, f"upload/{backend}/1/w200.webp")
    wait_until(lambda: objects.get(output_key) is not None, what="the output in storage")
    assert objects.get(output_key) == answer.data
    original_url = origin.url(f"upload/{backend}/1/original.jpg")
    original_key = original_key_of(host_a.settings, f"upload/{backend}/1/w200.webp", original_url)
    assert original_key.endswith("/1/original")  # beside its outputs
    wait_until(lambda: objects.get(original_key) is not None, what="the original in storage")
    assert objects.get(original_key) == photo()
    if backend == "s3":
        assert objects.content_type(output_key) == "image/webp"

    # Another host: empty local cache, no processor at all. The output comes
    # from object storage, and a new size is made from the stored original.
    host_b = make_stack(**storage)
    host_b.start(processors=0)
    again = host_b.get(f"/upload/{backend}/1/w200.webp")
    assert again.status == 200 and again.data == answer.data
    assert host_b.cached(f"upload/{backend}/1/w200.webp").exists()
    host_b.start_processor(0)
    assert host_b.get(f"/upload/{backend}/1/w300.jpg").status == 200
    assert origin.hits[f"upload/{backend}/1/original.jpg"] == 1


def publish_backlog(amqp_url: str, settings_dir: Path, count: int, attempt: int = 0) -> None:
    from common.config import load

    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        amqp.declare(channel, amqp.upload_queues(load("test", settings_dir)))
        channel.confirm_delivery()
        for index in range(count):
            job = UploadJob(
                f"{PREFIX}/rate/{index}.png", "image/png", payload=b"x" * 100, attempt=attempt
            )
            channel.basic_publish("", amqp.UPLOAD_QUEUE, job.encode(), amqp.persistent())
    finally:
        connection.close()


def test_the_rate_limit_holds_over_a_backlog(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(upload_rate_per_s=20.0, upload_concurrency=4)
    publish_backlog(stack.vhost.amqp_url, stack.workdir / "config", 200)
    stack.start(processors=0, uploader=True)
    root = Path(stack.config["storage_path"]) / PREFIX / "rate"
    wait_until(
        lambda: root.exists() and len(list(root.iterdir())) == 200, timeout_s=60, what="200 uploads"
    )
    times = sorted(path.stat().st_mtime for path in root.iterdir())
    # The limit is on starts; these are completions (file mtimes). An upload
    # started in one second may finish in the next, so a one-second window holds
    # at most the limit, plus the uploads in flight at its start (concurrency),
    # plus one for the window's edges. The long-run rate is the limit itself.
    busiest = max(sum(1 for t in times[i:] if t < start + 1.0) for i, start in enumerate(times))
    assert busiest <= 20 + 4 + 1, busiest
    overall_rate = (len(times) - 1) / (times[-1] - times[0])
    assert overall_rate <= 20.5, overall_rate


@pytest.mark.timeout(300)  # its own waits: 90 s for the retries, 60 s to drain, restarts
def test_storage_outage_loses_nothing(
    make_stack: Callable[..., Stack], origin: Origin, own_s3: S3Server
) -> None:
    stack = make_stack(**own_s3.config())
    stack.start(processors=2, uploader=True)
    objects = StoredObjects(stack.config, own_s3)
    origin.add("outage/own_s3/1/original.jpg", photo())
    own_s3.stop()
    answers = {}
    for width in range(101, 201):
        response = stack.get(f"/outage/own_s3/1/w{width}.jpg")
        assert response.status == 200
        key = object_key_of(stack.settings, f"outage/own_s3/1/w{width}.jpg")
        answers[key] = response.data
    delays = stack.config["upload_retry_delays_s"]

    host = upload_host(stack.workdir / "spill")

    def waiting_for_retry(of: str = host) -> int:
        return sum(stack.vhost.message_count(amqp.upload_delay_queue(d, of)) for d in delays)

    # Failed uploads wait in the delay queues (not in a sleeping consumer): uploads
    # by reference in their host's own, which lead back to its queue.
    wait_until(lambda: waiting_for_retry() > 0, what="uploads in a delay queue")
    own_s3.start()  # a fresh, empty server: the uploader recreates the bucket
    wait_until(
        lambda: all(objects.get(key) is not None for key in answers),
        timeout_s=90,
        what="all 100 objects after the outage",
    )
    for key, data in answers.items():
        assert objects.get(key) == data, key
    # A put that timed out on our side may have been stored all the same: its
    # retry stores the same bytes again (idempotent), and then none is left.
    wait_until(
        lambda: waiting_for_retry() + waiting_for_retry("") == 0,
        timeout_s=60,
        what="the retries drained",
    )
    assert stack.vhost.message_count(amqp.UPLOAD_DEAD_QUEUE) == 0
    for key, data in answers.items():
        assert objects.get(key) == data, key


def test_refused_uploads_are_dead_lettered_then_replayed(
    make_stack: Callable[..., Stack], s3: S3View
) -> None:
    admin = s3_client(s3.endpoint)
    admin.make_bucket(s3.bucket("vanishing"))
    stack = make_stack(**{**s3.config(bucket="vanishing"), "s3_create_bucket": False})
    stack.start(processors=0, uploader=True)
    # Now every put is refused: NoSuchBucket, may not create.
    admin.remove_bucket(s3.bucket("vanishing"))
    publish_backlog(stack.vhost.amqp_url, stack.workdir / "config", 3)
    wait_until(
        lambda: stack.vhost.message_count(amqp.UPLOAD_DEAD_QUEUE) == 3,
        timeout_s=30,
        what="3 refused uploads in the dead-letter queue",
    )
    assert stack.alive()["uploader"]
    assert "retry" not in stack.log("uploader")  # refusals are permanent: no retries

    admin.make_bucket(s3.bucket("vanishing"))
    replay = subprocess.run(
        [
            str(Path(sys.executable).parent / "image-server"),
            "replay-uploads",
            "--config-dir",
            str(stack.workdir / "config"),
            "-e",
            "test",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert replay.returncode == 0, replay.stderr
    assert "replayed 3" in replay.stdout
    objects = StoredObjects(stack.config, s3)
    wait_until(
        lambda: all(objects.get(f"{PREFIX}/rate/{i}.png") == b"x" * 100 for i in range(3)),
        timeout_s=30,
        what="the replayed uploads stored",
    )


def test_an_object_that_keeps_failing_exhausts_its_retries_into_the_dead_letter_queue(
    make_stack: Callable[..., Stack],
) -> None:
    # Storage takes writes, but not this object's: a directory is where it goes.
    stack = make_stack(upload_retry_delays_s=[0.2, 0.2, 0.2])
    (Path(stack.config["storage_path"]) / PREFIX / "rate" / "0.png").mkdir(parents=True)
    stack.start(processors=0, uploader=True)
    publish_backlog(stack.vhost.amqp_url, stack.workdir / "config", 1)
    wait_until(
        lambda: stack.vhost.message_count(amqp.UPLOAD_DEAD_QUEUE) == 1,
        timeout_s=30,
        what="the upload dead-lettered after its retries",
    )
    log = stack.log("uploader")
    assert log.count("; retry ") == 3
    assert "failed for good after 4 attempts" in log
    assert stack.alive()["uploader"]


def test_undecodable_upload_is_dead_lettered(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack()
    stack.start(processors=0, uploader=True)
    connection = pika.BlockingConnection(pika.URLParameters(stack.vhost.amqp_url))
    try:
        connection.channel().basic_publish("", amqp.UPLOAD_QUEUE, b"junk", amqp.persistent())
    finally:
        connection.close()
    wait_until(
        lambda: stack.vhost.message_count(amqp.UPLOAD_DEAD_QUEUE) == 1,
        timeout_s=30,
        what="the junk message dead-lettered",
    )
    assert stack.alive()["uploader"]


def test_uploader_stops_at_start_when_the_bucket_is_missing_and_may_not_be_made(
    make_stack: Callable[..., Stack], s3: S3View
) -> None:
    stack = make_stack(**{**s3.config(bucket="absent"), "s3_create_bucket": False})
    process = stack.spawn("uploader", "uploader")
    assert process.wait(30) != 0
    assert f"bucket '{s3.bucket('absent')}' does not exist" in stack.log("uploader")


def test_unreachable_storage_is_reported_at_start(
    make_stack: Callable[..., Stack], own_s3: S3Server
) -> None:
    own_s3.stop()
    stack = make_stack(**own_s3.config())
    stack.start(processors=0, uploader=True)
    health_url = f"http://127.0.0.1:{stack.config['uploader_health_port']}/health"
    answer = stack.http.request("GET", health_url)
    assert answer.status == 503
    assert json.loads(answer.data)["storage_reachable"] is False
    assert "object storage is not reachable" in stack.log("uploader")
    own_s3.start()
    publish_backlog(stack.vhost.amqp_url, stack.workdir / "config", 1)  # it works again
    wait_until(
        lambda: stack.http.request("GET", health_url).status == 200,
        timeout_s=30,
        what="healthy once an upload succeeds",
    )


def test_past_upload_backlog_max_uploads_wait_on_disk_and_are_stored_from_there(
    make_stack: Callable[..., Stack], origin: Origin
) -> None:
    stack = make_stack(upload_backlog_max=5, upload_rate_per_s=50.0)
    stack.start(processors=1, uploader=False)  # nobody drains image.upload yet
    origin.add("spill/img/1/original.jpg", photo())
    answers = {}
    for width in range(100, 130):
        response = stack.get(f"/spill/img/1/w{width}.jpg")
        assert response.status == 200  # the request path does not wait for any of it
        answers[object_key_of(stack.settings, f"spill/img/1/w{width}.jpg")] = response.data
    spill_dir = stack.workdir / "spill"

    def kept() -> tuple[int, int]:
        return queued_uploads(stack), len(spilled_files(spill_dir))

    # A processor replies before it queues the upload (and acks only after):
    # the last upload may follow its answer by a moment.
    wait_until(lambda: sum(kept()) >= 30, timeout_s=10, what="every upload queued or spilled")
    # The bound holds (one processor counts its own publishes between two asks);
    # the rest waits on disk, none is lost. (The original was stored directly.)
    assert kept() == (5, 25)
    stack.start_uploader()
    health = f"http://127.0.0.1:{stack.config['uploader_health_port']}/health"
    root = Path(stack.config["storage_path"])
    wait_until(
        lambda: all((root / key).exists() for key in answers), timeout_s=60, what="all stored"
    )
    for key, data in answers.items():
        assert (root / key).read_bytes() == data
    wait_until(lambda: kept()[1] == 0, what="the disk drained")
    wait_until(lambda: queued_uploads(stack) == 0, what="queues drained")

    def backlog_shown() -> tuple[object, ...]:
        report = json.loads(stack.http.request("GET", health).data)
        return report["queued_uploads"], report["spilled_uploads"], report["drain_estimate_s"]

    wait_until(lambda: backlog_shown() == (0, 0, 0), what="/health showing no backlog")


def test_no_attempt_is_spent_while_storage_is_down(
    make_stack: Callable[..., Stack], own_s3: S3Server
) -> None:
    # Uploads on their last attempt, and storage down from the uploader's start.
    own_s3.stop()
    stack = make_stack(upload_retry_delays_s=[0.2, 0.2], **own_s3.config())
    publish_backlog(stack.vhost.amqp_url, stack.workdir / "config", 20, attempt=2)
    stack.start(processors=0, uploader=True)

    def dead_lettered() -> int:
        return stack.vhost.message_count(amqp.UPLOAD_DEAD_QUEUE)

    # Each upload tried twice at least: retried each time, or given up.
    wait_until(
        lambda: stack.log("uploader").count("; retry ") >= 40 or dead_lettered() > 0,
        what="two tries of each upload",
    )
    assert dead_lettered() == 0  # none given up
    assert stack.log("uploader").count("this attempt is not counted") >= 40
    own_s3.start()
    objects = StoredObjects(stack.config, own_s3)
    keys = [f"{PREFIX}/rate/{index}.png" for index in range(20)]
    wait_until(lambda: all(objects.get(key) for key in keys), timeout_s=60, what="all stored")
    assert dead_lettered() == 0


def test_uploads_wait_on_disk_and_rabbitmq_carries_only_their_names(
    make_stack: Callable[..., Stack], origin: Origin
) -> None:
    """Bytes cross RabbitMQ only to leave the host: each upload is a file of its host
    (written durably first) and a small message in that host's queue; the host's
    uploader stores it and removes the file. One whose file is gone (a replaced
    disk) is counted lost, not retried forever."""
    stack = make_stack(upload_inline_max_bytes=20_000)
    stack.start(processors=1, uploader=False, status=True)  # nobody drains anything yet
    origin.add("inline/img/1/original.jpg", photo())
    small = stack.get("/inline/img/1/w100.jpg").data
    large = stack.get("/inline/img/1/w900.jpg").data
    lost = stack.get("/inline/img/1/w300.jpg").data
    assert len(small) < 20_000 < len(large)
    host_queue = amqp.host_upload_queue(upload_host(stack.workdir / "spill"))
    wait_until(lambda: stack.vhost.message_count(host_queue) == 3, what="three uploads queued")
    assert stack.vhost.message_count(amqp.UPLOAD_QUEUE) == 0
    held = stack.workdir / "spill" / "held"
    connection = stack.vhost.connect()
    try:
        channel = connection.channel()
        for _ in range(3):
            method, _, body = channel.basic_get(host_queue)
            assert method is not None and len(body) < 1000  # no image in it
            job = UploadJob.decode(body)
            assert job.payload == b"" and (held / job.file).exists()
            if job.key.endswith("/w300.jpg"):
                (held / job.file).unlink()  # its host's disk lost it
        channel.basic_nack(multiple=True, requeue=True)
    finally:
        connection.close()
    stack.start_uploader()
    root = Path(stack.config["storage_path"])
    for name, data in (("w100.jpg", small), ("w900.jpg", large)):
        key = object_key_of(stack.settings, f"inline/img/1/{name}")
        wait_until(lambda: (root / key).exists(), what=name)  # noqa: B023
        assert (root / key).read_bytes() == data
    wait_until(lambda: stack.vhost.message_count(host_queue) == 0, what="the queue drained")
    assert lost and not (root / object_key_of(stack.settings, "inline/img/1/w300.jpg")).exists()
    assert [path for path in held.iterdir() if not path.name.startswith(".")] == []
    outcomes = {
        dict(labels)["outcome"]: value
        for (name, labels), value in stack.metrics().items()
        if name == "image_server_uploads_total"
    }
    assert outcomes == {"stored": 2.0, "lost": 1.0}
    assert stack.vhost.message_count(amqp.UPLOAD_DEAD_QUEUE) == 0


def test_a_large_upload_is_dropped_and_counted_when_spill_path_is_full(
    make_stack: Callable[..., Stack], origin: Origin
) -> None:
    """Past spill_max_bytes a large output is answered but not kept: RabbitMQ's
    memory is not for it either. The next miss makes it again."""
    limits = {"max_output_bytes": 1_000_000, "max_source_bytes": 2_000_000}
    stack = make_stack(upload_inline_max_bytes=20_000, spill_max_bytes=2_000_000, **limits)
    spill_dir = stack.workdir / "spill"
    waiting = UploadJob("other", "image/jpeg", payload=b"x" * 1_990_000)
    Spill(spill_dir, 2_000_000).put(waiting)  # other uploads, waiting: both directories full
    HeldUploads(spill_dir, 2_000_000).hold(waiting)
    filler = spill_dir / sha256_hex("other")
    stack.start(processors=1, uploader=False, status=True)
    origin.add("dropped/img/1/original.jpg", photo())
    large = stack.get("/dropped/img/1/w900.jpg")
    assert large.status == 200 and len(large.data) > 20_000  # the client has its answer
    dropped: tuple[str, frozenset[tuple[str, str]]] = (
        "image_server_dropped_uploads_total",
        frozenset(),
    )
    wait_until(lambda: stack.metrics().get(dropped) == 1, what="the dropped upload counted")
    assert spilled_files(spill_dir) == [filler]
    assert queued_uploads(stack) == 0
    assert "spill_max_bytes" in stack.log("processor_0")


def test_a_gone_hosts_queues_expire_and_a_living_hosts_stay(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack(upload_host_queue_expiry_s=2.0)
    stack.start_uploader()
    settings = configured(amqp_url=stack.vhost.amqp_url, upload_host_queue_expiry_s=2.0)
    this_host = upload_host(stack.workdir / "spill")
    connection = stack.vhost.connect()
    try:
        channel = connection.channel()
        amqp.declare(channel, amqp.upload_queues(settings, "0123456789abcdef0123"))
        channel.basic_publish("", amqp.host_upload_queue("0123456789abcdef0123"), b"gone")
    finally:
        connection.close()
    host_queues = [q.name for q in amqp.upload_queues(settings, this_host) if this_host in q.name]
    gone_queues = [
        q.name for q in amqp.upload_queues(settings, "0123456789abcdef0123") if "0123" in q.name
    ]
    assert len(host_queues) == len(gone_queues) == 1 + len(settings.upload_retry_delays_s)

    def exists(queue: str) -> bool:
        try:
            stack.vhost.message_count(queue)
        except pika.exceptions.ChannelClosedByBroker:
            return False
        return True

    wait_until(
        lambda: not any(exists(q) for q in gone_queues), 30, "the gone host's queues expired"
    )
    # Three expiries on: the uploader consumes from its queue and declares the
    # delay queues again (nothing consumes them), so none of this host's went.
    time.sleep(3 * 2.0)
    assert all(exists(queue) for queue in [amqp.UPLOAD_QUEUE, *host_queues])
