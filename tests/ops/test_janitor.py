"""Disk budgets: the janitor's sweep, and the janitor under a stream of misses."""

from __future__ import annotations

import itertools
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import pyvips

from common import keys
from common.file_index import FileIndex
from common.settings import Settings
from ops import cache_layout
from ops.janitor import USAGE_FILE, Budget, Usage, budgets, is_output, rebuild, sweep
from ops.pacing import Stopped
from tests.support.images import decode, photo
from tests.support.origin import Origin
from tests.support.settings import configured
from tests.support.stack import Stack
from tests.support.waiting import wait_until


def indexed(budget: Budget) -> FileIndex:
    """The budget's index, built by the janitor's walk (as at its first start)."""
    index = FileIndex(budget.directory)
    rebuild(budget, index)
    return index


def output_path(cache: Path, cache_key: str) -> Path:
    """Where the layout keeps the output `cache_key` under the cache directory `cache`."""
    return keys.OutputRef.from_cache_key(cache_key).path_under(cache)


def original_name(url: str) -> Path:
    """Where the layout keeps the original of `url`, under originals_path."""
    digest = keys.sha256_hex(url)
    return Path(digest[:2]) / digest


def _file(path: Path, size: int, used_at: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    os.utime(path, (used_at, used_at))
    return path


def test_sweep_removes_least_recently_used_files_down_to_the_low_water_mark(
    tmp_path: Path,
) -> None:
    now = time.time()
    files = [
        _file(output_path(tmp_path, f"m/t/{i}/w1.jpg"), 100, now - 1000 + i) for i in range(10)
    ]
    usage = Usage()
    budget = Budget("outputs", tmp_path, 500, is_output)
    sweep(budget, indexed(budget), usage, min_age_s=60, now=now)
    # 1000 bytes against 500: the six oldest go (down to 90% of the budget: 400).
    assert [f.exists() for f in files] == [False] * 6 + [True] * 4
    assert (usage.bytes_used, usage.files, usage.evicted_files, usage.evicted_bytes) == (
        400, 4, 6, 600
    )  # fmt: skip


def test_sweep_spares_what_is_in_use_being_written_or_another_budgets(tmp_path: Path) -> None:
    now = time.time()
    old = _file(tmp_path / original_name("old"), 300, now - 1000)
    recent = _file(tmp_path / original_name("recent"), 300, now - 10)  # read 10 s ago: in use
    writing = _file(tmp_path / "a" / ".tmp-123", 300, now - 1000)  # a producer's temporary file
    lock = _file(tmp_path / ".locks" / "abc", 0, now - 1000)
    master = _file(tmp_path / "masters" / original_name("m").with_suffix(".v"), 300, now - 1000)
    usage = Usage()
    budget = Budget("originals", tmp_path, 100, keys.is_kept_original, frozenset({"masters"}))
    sweep(budget, indexed(budget), usage, 60, now=now)
    assert not old.exists()
    assert recent.exists() and writing.exists() and lock.exists() and master.exists()
    assert usage.bytes_used == 300  # still over: the rest is in use, and stays


P1 = keys.partition("1")
FOREIGN = [
    "important.txt",
    "docs/thesis.pdf",
    f"m/t/{P1}/1.notes.txt",  # an image's file, a name no output has
    f"m/t/{P1}/1.w100.pdf",  # not an output format
    f"m/t/{P1}/1/w100.jpg",  # one level too deep (an earlier layout's)
    f"m/t/{P1}/1.src-nothex.w100.jpg",
    f"m/t/{'abc' if P1 != 'abc' else 'abd'}/1.w100.jpg",  # not its partition
    "ab/not-a-digest",
    "masters/ab/abc-2.v",
]


def test_the_janitor_removes_only_files_its_layout_made(tmp_path: Path) -> None:
    """Foreign files under the cache paths survive sweeps at a tiny budget and a
    free-disk share no disk can give (every sweep then evicts all it may)."""
    now = time.time()
    settings = settings_for_janitor(tmp_path)
    cache, originals = settings.cache_dir, settings.originals_dir
    foreign = [_file(root / name, 100, now - 10_000) for root in (cache, originals)
               for name in FOREIGN]  # fmt: skip
    output = _file(output_path(cache, "m/t/1/w100.jpg"), 100, now - 10_000)
    sourced = _file(output_path(cache, f"m/t/1/src-{'a' * 24}/x50-q60.webp"), 100, now - 10_000)
    original = _file(originals / original_name("http://x/a.jpg"), 100, now - 10_000)
    master_name = original_name("http://x/a.jpg").with_suffix("")
    master = _file(originals / "masters" / f"{master_name}-2.v", 100, now - 10_000)
    for budget in budgets(settings):
        sweep(budget, indexed(budget), Usage(), 60, now=now, free_bytes=10**15)
    assert all(path.exists() for path in foreign)
    assert not any(path.exists() for path in (output, sourced, original, master))


def settings_for_janitor(root: Path) -> Settings:
    paths = {"local_base_path": str(root / "cache"), "originals_path": str(root / "originals")}
    return configured(**paths, cache_max_bytes=1, originals_max_bytes=1)


def test_a_read_marks_an_output_as_used(stack: Stack, origin: Origin) -> None:
    origin.add("janitor/touch/1/original.jpg", photo())
    assert stack.get("/janitor/touch/1/w100.jpg").status == 200
    path = stack.cached("janitor/touch/1/w100.jpg")
    long_ago = time.time() - 3600
    os.utime(path, (long_ago, path.stat().st_mtime))
    mtime = path.stat().st_mtime_ns
    assert stack.get("/janitor/touch/1/w100.jpg").status == 200
    assert path.stat().st_atime > long_ago + 3000
    assert path.stat().st_mtime_ns == mtime  # Last-Modified and ETag unchanged


_ids = itertools.count(1)


def _distinct_original(index: int) -> bytes:
    """A photograph no other test has: the sample, cropped differently each time."""
    image = decode(photo())
    return bytes(image.crop(index * 7, index * 5, 1200, 800).write_to_buffer(".jpg", Q=90))


def _bytes_under(directory: Path, skip: str | None = None) -> int:
    total = 0
    for path in directory.rglob("*"):
        relative = path.relative_to(directory).parts
        if path.is_file() and not any(p.startswith(".") for p in relative) and skip not in relative:
            total += path.stat().st_size
    return total


def test_directories_stay_within_budget_under_a_stream_of_misses(
    make_stack: Callable[..., Stack], origin: Origin
) -> None:
    budgets = {"cache_max_bytes": 150_000, "originals_max_bytes": 600_000,
               "masters_max_bytes": 3_000_000}  # fmt: skip
    stack = make_stack(**budgets, janitor_interval_s=0.2, eviction_min_age_s=0.0)
    stack.start(processors=2, status=True)
    stack.spawn("janitor", "ops.janitor")
    answers = []
    cache, originals = stack.workdir / "cache", stack.workdir / "originals"
    largest_cache = 0  # seen during the stream, not only after it
    first_id = None
    for index in range(30):
        image_id = next(_ids)
        first_id = first_id or image_id
        origin.add(f"janitor/img/{image_id}/original.jpg", _distinct_original(index))
        for output in ("w300.jpg", "x200.jpg"):  # the second size makes a master
            response = stack.get(f"/janitor/img/{image_id}/{output}")
            answers.append(response.status)
            if response.status == 200:  # every answer whole: it decodes
                assert decode(response.data).width in (300, 200)
            largest_cache = max(largest_cache, _bytes_under(cache))
    assert answers == [200] * 60
    # Unswept, the stream would leave about 1 MB here: the janitor kept up while it ran
    # (within a few sweeps' worth of writes).
    assert largest_cache <= 3 * budgets["cache_max_bytes"], largest_cache

    def within_budgets() -> bool:
        # At most the budget once the janitor has swept after the last write (it
        # sweeps every 0.2 s: on a loaded machine that may take a little longer).
        return (
            _bytes_under(cache) <= budgets["cache_max_bytes"]
            and _bytes_under(originals, skip="masters") <= budgets["originals_max_bytes"]
            and _bytes_under(originals / "masters") <= budgets["masters_max_bytes"]
        )

    wait_until(within_budgets, timeout_s=20, what="every cache within its budget")
    usage = json.loads((cache / USAGE_FILE).read_text())
    assert usage["outputs"]["evicted_files"] > 0 and usage["originals"]["evicted_files"] > 0
    shown = stack.status_json()["disk"]
    assert shown["outputs"]["max_bytes"] == budgets["cache_max_bytes"]
    assert shown["outputs"]["evicted_files"] >= usage["outputs"]["evicted_files"]
    # An evicted output is simply made again.
    first = f"janitor/img/{first_id}/w300.jpg"
    assert not stack.cached(first).exists()  # the oldest went first
    again = stack.get(f"/{first}")
    assert again.status == 200 and pyvips.Image.new_from_buffer(again.data, "").width == 300
    assert stack.resizes(first) == 2
    assert stack.alive()["janitor"]


def test_a_stop_asked_during_a_walk_ends_it_and_the_next_start_goes_on(tmp_path: Path) -> None:
    """`supervisorctl stop` does not wait for the walk of a whole cache: the rebuild
    of an index and the move of an earlier layout stop at their next pause, and the
    next start finishes them."""
    images = 2500  # more than one batch of paced work
    cache = tmp_path / "cache"
    for number in range(images):
        _file(cache / f"m/t/{number}/w100.jpg", 10, time.time() - 10_000)  # the first layout
    asked = threading.Event()
    asked.set()
    with pytest.raises(Stopped):
        cache_layout.migrate(cache, stop=asked)
    assert not (cache / cache_layout.MIGRATED).exists()
    assert cache_layout.migrate(cache) < images  # the rest, at the next start
    assert len(list(cache.glob("m/t/*/*.w100.jpg"))) == images
    budget = Budget("outputs", cache, 10**9, is_output)
    index = FileIndex(cache)
    with pytest.raises(Stopped):
        rebuild(budget, index, stop=asked)
    assert not index.built()
    rebuild(budget, index)
    assert index.built() and index.totals() == (images, images * 10)
