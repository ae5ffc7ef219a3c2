"""Work ahead of requests: popular outputs made in the background, POST pre-generation.

Real processors, a real RabbitMQ and the filesystem object store: outputs
made in the background are found where every host looks for them.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Callable
from pathlib import Path

import urllib3

from common import amqp
from common.signing import pregenerate_message, purge_message, signature, with_query
from tests.support.images import decode, photo, solid
from tests.support.origin import Origin
from tests.support.settings import object_key_of
from tests.support.stack import Stack
from tests.support.waiting import wait_until

POPULAR = {
    "popular_outputs_max": 2,
    "popular_min_share": 0.2,
    "popular_min_requests": 10,
    "stats_interval_s": 0.3,
}


PREGENERATE_KEY = "pregenerate-key-of-the-background-tests"


def post(
    stack: Stack, path: str, outputs: str, key: str = PREGENERATE_KEY
) -> urllib3.BaseHTTPResponse:
    """POST /<model>/<imageType>/<id>?outputs=..., signed with `key`."""
    signed = signature(key, pregenerate_message(path, outputs))
    return post_query(stack, path, outputs=outputs, signature=signed)


def post_query(stack: Stack, path: str, **query: str) -> urllib3.BaseHTTPResponse:
    return stack.get(f"{path}?{urllib.parse.urlencode(query)}", method="POST")


def stored(stack: Stack, cache_key: str) -> Path:
    return stack.stored_path(object_key_of(stack.settings, cache_key))


def statistics_total(stack: Stack, kind: str) -> int:
    """Requests of image type `kind` in every frontend's saved statistics."""
    directory = Path(stack.config["storage_path"]) / stack.config["storage_key_prefix"] / ".stats"
    return sum(
        sum(json.loads(path.read_text()).get(kind, {}).values())
        for path in directory.glob("*.json")
    )


def test_popular_outputs_of_a_new_image_are_made_without_being_asked(
    make_stack: Callable[..., Stack], origin: Origin
) -> None:
    stack = make_stack(frontends=2, **POPULAR).start(processors=2, uploader=True, status=True)
    for index in range(10):
        origin.add(f"shop/product/{index}/original.jpg", photo())
    # The scripted mix: x300.jpg and w500.webp are asked of every image, x100.png once.
    for index in range(5):
        for output in ("x300.jpg", "w500.webp"):
            assert stack.get(f"/shop/product/{index}/{output}").status == 200
    assert stack.get("/shop/product/0/x100.png").status == 200
    wanted = '{"shop/product": ["x300.jpg", "w500.webp"]}'
    for name in ("frontend_0", "frontend_1"):
        wait_until(lambda: wanted in stack.log(name).replace('\\"', '"'), what=f"{name} stats")  # noqa: B023
    wait_until(lambda: statistics_total(stack, "shop/product") == 11, what="statistics saved")

    # A new image: its first request is answered, then its other popular output is made.
    assert stack.get("/shop/product/7/x300.jpg").status == 200
    wait_until(lambda: stored(stack, "shop/product/7/w500.webp").exists(), what="background")
    assert stack.resizes("shop/product/7/w500.webp") == 1
    answer = stack.get("/shop/product/7/w500.webp")  # from object storage, no second resize
    assert answer.status == 200 and decode(answer.data).width == 500
    assert stack.resizes("shop/product/7/w500.webp") == 1
    # Another miss of the same image queues nothing already made (x300.jpg, w500.webp):
    # had it queued them, a processor would take them and skip them as stored.
    assert stack.get("/shop/product/7/x100.png").status == 200
    # A control queued after it (the queue is first in, first out): once its output is
    # stored, anything queued before it has been taken too.
    assert stack.get("/shop/product/8/x300.jpg").status == 200
    wait_until(lambda: stored(stack, "shop/product/8/w500.webp").exists(), what="the control")
    wait_until(lambda: stack.vhost.message_count(amqp.BACKGROUND_QUEUE) == 0, what="drained")
    skipped = [
        value
        for (name, labels), value in stack.metrics().items()
        if name == "image_server_jobs_total" and ("outcome", "already_stored") in labels
    ]
    assert sum(skipped) == 0, skipped
    assert stack.resizes("shop/product/7/x300.jpg") == 1
    assert stack.resizes("shop/product/7/w500.webp") == 1
    # The statistics counted the four requests, not the background jobs.
    wait_until(lambda: statistics_total(stack, "shop/product") == 15, what="statistics saved")


def test_a_request_does_not_wait_behind_a_flood_of_background_jobs(
    make_stack: Callable[..., Stack], origin: Origin
) -> None:
    stack = make_stack(pregenerate_keys=[PREGENERATE_KEY]).start(processors=1)
    for index in range(3):
        origin.add(f"flood/img/{index}/original.jpg", photo())
    for index in (0, 1):
        outputs = ",".join(f"w{width}.jpg" for width in range(200, 300))
        answer = post(stack, f"/flood/img/{index}", outputs)
        assert answer.status == 202
        assert len(json.loads(answer.data)["queued"]) == 99
    waiting = stack.vhost.message_count(amqp.BACKGROUND_QUEUE)
    assert waiting > 150
    answer = stack.get("/flood/img/2/w100.jpg")  # a new image, asked by a client
    assert answer.status == 200
    # Answered while most of the flood still waits: it did not queue behind it.
    assert stack.vhost.message_count(amqp.BACKGROUND_QUEUE) > waiting - 20


def test_post_makes_the_first_output_now_and_queues_the_rest(
    make_stack: Callable[..., Stack], origin: Origin
) -> None:
    stack = make_stack(pregenerate_keys=[PREGENERATE_KEY]).start(processors=1, uploader=True)
    origin.add("pre/img/1/original.jpg", photo())
    # Any shape; each under its canonical name.
    answer = post(stack, "/pre/img/1", "x300.jpg,w500.webp,300x400-pad-FFFFFF.jpg,x200-smart.jpg")
    assert answer.status == 202
    assert answer.headers["Content-Type"] == "application/json"
    assert json.loads(answer.data) == {
        "made": ["x300.jpg"],
        "queued": ["w500.webp", "300x400-pad.jpg", "x200-smart.jpg"],
        "existing": [],
        "refused": [],
    }
    made = ("x300.jpg", "w500.webp", "300x400-pad.jpg", "x200-smart.jpg")
    for key in (f"pre/img/1/{name}" for name in made):
        wait_until(lambda: stored(stack, key).exists(), what=key)  # noqa: B023
    again = post(stack, "/pre/img/1", "x300.jpg,w500.webp")
    assert json.loads(again.data)["existing"] == ["x300.jpg", "w500.webp"]
    assert stack.resizes("pre/img/1/w500.webp") == 1
    # Errors as GET: the original is fetched now.
    assert post(stack, "/pre/img/404", "x300.jpg").status == 404
    assert post(stack, "/pre/img/1", "x300.gif").status == 406
    assert post(stack, "/pre/img/1", "nonsense").status == 400
    assert post(stack, "/pre/img/1", "").status == 400
    too_many = ",".join(f"w{width}.jpg" for width in range(100, 202))
    assert post(stack, "/pre/img/1", too_many).status == 400


def test_post_needs_a_signature_of_its_own_outputs(
    make_stack: Callable[..., Stack], origin: Origin
) -> None:
    """An anonymous client cannot queue background work: POST is signed with
    pregenerate_keys, over the outputs it names."""
    origin.add("pre/img/2/original.jpg", photo())
    closed = make_stack().start(processors=1)
    refused = post(closed, "/pre/img/2", "x300.jpg")
    assert refused.status == 403 and b"pre-generation is off" in refused.data
    stack = make_stack(pregenerate_keys=[PREGENERATE_KEY]).start(processors=1)
    unsigned = post_query(stack, "/pre/img/2", outputs="x300.jpg")
    assert unsigned.status == 403
    assert post(stack, "/pre/img/2", "x300.jpg", key="another-key").status == 403
    # A signature of one list of outputs does not sign another.
    signed = signature(PREGENERATE_KEY, pregenerate_message("/pre/img/2", "x300.jpg"))
    replayed = post_query(stack, "/pre/img/2", outputs="x300.jpg,w900.webp", signature=signed)
    assert replayed.status == 403
    assert origin.hits["pre/img/2/original.jpg"] == 0  # nothing was made for any of them
    assert post(stack, "/pre/img/2", "x300.jpg").status == 202


def test_background_jobs_have_a_shorter_deadline_than_requests(
    make_stack: Callable[..., Stack], origin: Origin
) -> None:
    """A background job is abandoned past background_job_timeout_s; the same
    output asked by a client (job_timeout_s) is made."""
    origin.add("pre/img/3/original.jpg", photo())
    stack = make_stack(pregenerate_keys=[PREGENERATE_KEY], background_job_timeout_s=0.001).start(
        processors=1, uploader=True
    )
    assert post(stack, "/pre/img/3", "x300.jpg,w700.webp").status == 202
    wait_until(lambda: "failed pre/img/3/w700.webp" in stack.log("processor_0"), what="failure")
    assert not stored(stack, "pre/img/3/w700.webp").exists()
    assert stack.get("/pre/img/3/w700.webp").status == 200


def test_answers_name_their_image_for_a_cdn_purge(stack: Stack, origin: Origin) -> None:
    origin.add("cdn/img/5/original.jpg", photo())
    miss = stack.get("/cdn/img/5/w100.jpg")
    hit = stack.get("/cdn/img/5/w100.jpg")
    for answer in (miss, hit):
        assert answer.headers["Surrogate-Key"] == "cdn/img/5 cdn/img"


def test_purging_is_refused_without_purge_keys(stack: Stack, origin: Origin) -> None:
    origin.add("cdn/img/6/original.jpg", photo())
    made = stack.get("/cdn/img/6/w100.jpg")
    assert made.status == 200
    refused = stack.get("/cdn/img/6", method="DELETE")
    assert refused.status == 403 and b"purging is off" in refused.data
    after = stack.get("/cdn/img/6/w100.jpg")
    # The same file (its ETag is its size and mtime), never deleted and made again.
    assert after.status == 200 and after.headers["ETag"] == made.headers["ETag"]
    assert stack.resizes("cdn/img/6/w100.jpg") == 1
    assert origin.hits["cdn/img/6/original.jpg"] == 1


PURGE_KEY = "purge-key-of-the-background-tests-00"


def uploads(stack: Stack, result: str) -> float:
    """image_server_uploads_total{outcome=...} of the stack's uploader."""
    wanted = ("outcome", result)
    return sum(
        value
        for (name, labels), value in stack.metrics().items()
        if name == "image_server_uploads_total" and wanted in labels
    )


def test_a_purge_wins_over_every_put_still_on_its_way(
    make_stack: Callable[..., Stack], origin: Origin
) -> None:
    # Uploads at 10/s: 40 outputs made in about a second wait for seconds in
    # image.upload, and the purge comes while most of them are still there.
    stack = make_stack(purge_keys=[PURGE_KEY], upload_rate_per_s=10.0)
    stack.start(processors=2, uploader=True, status=True)
    origin.add("race/img/1/original.jpg", photo())  # 1600x1000
    names = [f"w{width}.jpg" for width in range(100, 140)]
    for name in names:
        assert stack.get(f"/race/img/1/{name}").status == 200
    origin.add("race/img/1/original.jpg", solid(400, 800, (200, 30, 30), ".jpg"))  # changed
    signed = signature(PURGE_KEY, purge_message("/race/img/1"))
    assert stack.get(f"/race/img/1?signature={signed}", method="DELETE").status == 200
    # Every upload is done: stored, or undone by the purge.
    wait_until(
        lambda: uploads(stack, "stored") + uploads(stack, "purged") == len(names),
        timeout_s=60,
        what="every upload done",
    )
    prefix = Path(stack.config["storage_path"]) / stack.settings.storage_key_prefix / "race"
    left = [path.name for path in prefix.rglob("*") if path.is_file()]
    assert left == [], f"{len(left)} objects of the purged image came back: {left[:5]}"
    assert uploads(stack, "purged") > 0  # puts did come after the purge (the race happened)
    # The next request is a miss made from the new original (a portrait now).
    again = stack.get("/race/img/1/w100.jpg")
    assert (decode(again.data).width, decode(again.data).height) == (100, 200)


def test_a_pre_generated_output_is_found_before_its_upload_lands(
    make_stack: Callable[..., Stack], origin: Origin
) -> None:
    # One upload every 10 s: the queued outputs' uploads wait behind the first.
    stack = make_stack(pregenerate_keys=[PREGENERATE_KEY], upload_rate_per_s=0.1)
    stack.start(processors=1, uploader=True)
    origin.add("pre/img/7/original.jpg", photo())
    assert post(stack, "/pre/img/7", "x300.jpg,w500.webp,300x200-pad.jpg").status == 202
    for name in ("w500.webp", "300x200-pad.jpg"):
        wait_until(lambda: stack.resizes(f"pre/img/7/{name}") == 1, what=name)  # noqa: B023
        assert not stored(stack, f"pre/img/7/{name}").exists()  # its upload still waits
        assert stack.get(f"/pre/img/7/{name}").status == 200
        assert stack.resizes(f"pre/img/7/{name}") == 1  # the request found it: no resize
    # Its uploads in hand wait their turn at 0.1/s: a graceful stop would wait for them.
    stack.kill("uploader")


def test_a_purge_with_a_source_removes_that_sources_outputs(
    make_stack: Callable[..., Stack], origin: Origin
) -> None:
    stack = make_stack(purge_keys=[PURGE_KEY]).start(processors=1, uploader=True, status=True)
    origin.add("purge/src/1/original.jpg", photo())
    source = origin.add("purge/elsewhere/one.jpg", solid(400, 800, (200, 30, 30), ".jpg"))
    assert stack.get("/purge/src/1/w100.jpg", fields={"source": source}).status == 200
    cached = stack.cached_outputs("purge/src/1")
    assert len(cached) == 1 and cached[0].name.startswith("1.src-")  # the source's own output
    assert cached[0].name.endswith(".w100.jpg")
    wait_until(lambda: uploads(stack, "stored") >= 1, what="the output stored")
    signed = signature(PURGE_KEY, purge_message("/purge/src/1"), source)
    purged = stack.get(with_query("/purge/src/1", signed, source), method="DELETE")
    assert purged.status == 200, purged.data
    assert not cached[0].exists()
    prefix = Path(stack.config["storage_path"]) / stack.settings.storage_key_prefix / "purge"
    assert [p.name for p in prefix.rglob("w100.jpg")] == []
    # Made again from the source, not served from anything left behind.
    assert stack.get("/purge/src/1/w100.jpg", fields={"source": source}).status == 200
    assert origin.hits["purge/elsewhere/one.jpg"] == 2
