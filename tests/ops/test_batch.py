"""The batch tool against real storage (SeaweedFS' S3 gateway, a directory), a real
RabbitMQ and real processors: regeneration, its resumption, the key migration."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from common.keys import explicit_original_key
from common.storage import ObjectStore, open_store
from tests.support import REPO
from tests.support.images import photo
from tests.support.origin import Origin
from tests.support.s3 import storage_config
from tests.support.settings import object_key_of, original_key_of
from tests.support.stack import Stack
from tests.support.waiting import wait_until

IMAGES = 10
OUTPUTS = ("x120.jpg", "w200.webp")


IMAGE_SERVER = str(Path(sys.executable).parent / "image-server")  # the console script


def batch(stack: Stack, command: str, *args: str) -> subprocess.Popen[str]:
    """`image-server <command>` on the stack's config; stdout and stderr piped."""
    argv = [IMAGE_SERVER, command, "--config-dir", str(stack.workdir / "config"), "-e", "test"]
    return subprocess.Popen(
        [*argv, *args], cwd=REPO, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


def counts(report: str) -> dict[str, int]:
    return {name: int(n) for name, n in re.findall(r"(\w+) (\d+)", report.split(":", 1)[1])}


@pytest.mark.timeout(360)  # its own waits: 60 + 120 + 60 s, and SeaweedFS' start
@pytest.mark.parametrize("backend", ["s3", "filesystem"])
def test_regenerate_is_interrupted_and_resumed_without_duplicates(
    backend: str,
    make_stack: Callable[..., Stack],
    origin: Origin,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    s3 = request.getfixturevalue("s3") if backend == "s3" else None
    stack = make_stack(**storage_config(backend, s3, tmp_path / "objects")).start(
        processors=2, uploader=True
    )
    store = open_store(stack.settings)
    store.prepare()
    for index in range(IMAGES):  # originals already in object storage, none at the source
        cache_key = f"batch/img/{index}/w1.jpg"
        store.put(original_key_of(stack.settings, cache_key, "unused"), photo(), "image/jpeg")
    run = ("regenerate", "--prefix", "batch", "--outputs", ",".join(OUTPUTS), "--rate", "6",
           "--cursor", str(tmp_path / "cursor"))  # fmt: skip

    first = batch(stack, *run)
    # Some originals queued (the cursor is saved after each), not all: then Ctrl-C.
    wait_until(lambda: (tmp_path / "cursor").exists(), what="the first original queued")
    first.send_signal(signal.SIGINT)  # it finishes the original in hand
    _, errors = first.communicate(timeout=60)
    assert first.returncode == 1  # not everything asked was done
    assert errors.startswith("environment 'test' ("), errors  # said before any change
    report = last_line(errors)
    assert report.startswith("interrupted") and "run the same command again" in report, errors
    interrupted = counts(report)
    assert 0 < interrupted["originals"] < IMAGES
    assert interrupted["queued"] == len(OUTPUTS) * interrupted["originals"]

    second = batch(stack, *run)
    report, errors = second.communicate(timeout=120)
    assert second.returncode == 0 and report.startswith("done"), report + errors
    resumed = counts(report)
    assert interrupted["originals"] + resumed["originals"] == IMAGES
    assert interrupted["queued"] + resumed["queued"] == IMAGES * len(OUTPUTS)

    keys = [f"batch/img/{i}/{name}" for i in range(IMAGES) for name in OUTPUTS]
    wait_until(
        lambda: all(store.exists(object_key_of(stack.settings, key)) for key in keys),
        timeout_s=60,
        what="every output stored",
    )
    assert [stack.resizes(key) for key in keys] == [1] * len(keys)  # none made twice
    assert not any(path.startswith("batch/") for path in origin.hits)  # originals from storage

    # Everything is there now: a new run queues nothing.
    report, _ = batch(stack, *run).communicate(timeout=60)
    assert counts(report) == {"originals": IMAGES, "queued": 0, "skipped": 20, "failed": 0}


def test_migrate_keys_moves_the_flat_layout(
    make_stack: Callable[..., Stack], origin: Origin
) -> None:
    stack = make_stack()
    settings = stack.settings
    store: ObjectStore = open_store(settings)
    prefix = settings.storage_key_prefix
    url = origin.add("old/img/1/original.jpg", photo())
    flat = {
        f"{prefix}/old/img/1/w100.jpg": b"output w100",
        f"{prefix}/old/img/1/src-0123456789abcdef01234567/w100.jpg": b"output of a source",
        explicit_original_key(settings, url): photo(),
    }
    for key, data in flat.items():
        store.put(key, data, "image/jpeg")
    report, _ = batch(stack, "migrate-keys").communicate(timeout=60)
    assert "moved 3 objects" in report
    moved = {
        object_key_of(settings, "old/img/1/w100.jpg"): b"output w100",
        object_key_of(settings, "old/img/1/src-0123456789abcdef01234567/w100.jpg"): (
            b"output of a source"
        ),
        original_key_of(settings, "old/img/1/w100.jpg", url): photo(),
    }
    assert {key: store.get(key) for key in moved} == moved
    assert [store.exists(key) for key in flat] == [False, False, False]
    # The service finds them: the output as stored, a new size from the stored original.
    stack.start(processors=1)
    assert stack.get("/old/img/1/w100.jpg").data == b"output w100"
    assert stack.get("/old/img/1/w300.jpg").status == 200
    assert origin.hits["old/img/1/original.jpg"] == 0
