"""Uploads kept on disk stay within spill_max_bytes, counted over every process
of the host that puts into the directory; none stays that no message will name."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from common.errors import DiskFull
from common.file_index import INDEX_NAME
from common.held_journal import JOURNALS_DIR
from common.messages import UploadJob
from common.spill import HELD_DIR, HeldUploads, Spill
from tests.support import REPO
from uploader.spilled import tidy_held


def upload(number: int) -> UploadJob:
    return UploadJob(key=f"out/{number}.jpg", content_type="image/jpeg", payload=bytes(10_000))


def test_the_spill_directory_never_holds_more_than_spill_max_bytes(tmp_path: Path) -> None:
    size = len(upload(0).encode())
    spill = Spill(tmp_path, max_bytes=5 * size)
    for number in range(5):
        spill.put(upload(number))
    with pytest.raises(DiskFull, match="spill_max_bytes"):
        spill.put(upload(5))
    assert spill.bytes_held() == 5 * size
    # Another process of the host (its own Spill) sees the same bytes.
    with pytest.raises(DiskFull):
        Spill(tmp_path, max_bytes=5 * size).put(upload(6))
    # The uploader stores two and removes their files: there is room again at once.
    for path in spill.oldest(2):
        spill.stored(path)
    spill.put(upload(7))
    spill.put(upload(8))
    with pytest.raises(DiskFull):
        spill.put(upload(9))
    assert spill.bytes_held() == 5 * size


def test_uploads_held_by_reference_are_counted_again_when_their_index_is_lost(
    tmp_path: Path,
) -> None:
    size = len(upload(0).encode())
    HeldUploads(tmp_path, max_bytes=3 * size).hold(upload(0))
    HeldUploads(tmp_path, max_bytes=3 * size).hold(upload(1))
    for index_file in (tmp_path / HELD_DIR).glob(f"{INDEX_NAME}*"):
        index_file.unlink()
    held = HeldUploads(tmp_path, max_bytes=3 * size)
    assert held.rebuild_if_needed() == 2  # what the uploader does when it starts
    assert held.rebuild_if_needed() == 0
    held.hold(upload(2))
    with pytest.raises(DiskFull, match="spill_max_bytes"):
        held.hold(upload(3))


_KILLED_WRITER = """
import os, signal, sys
from pathlib import Path
from common import held_journal
from common.messages import UploadJob
from common.spill import HeldUploads

held_journal.COMPACT_LINES = 6  # rewritten several times on the way
held = HeldUploads(Path(sys.argv[1]), max_bytes=10**9)
for number in range(12):
    job = held.hold(UploadJob(key=f"out/{number}.jpg", content_type="image/jpeg", payload=b"x"))
    if number < 9:
        held.published(job)  # RabbitMQ confirmed its message
    elif number == 9:
        held.release(job)  # the connection went before it was published
    print(job.file, flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # between a write and its publish
"""


def held_files(spill_dir: Path) -> set[str]:
    return {p.name for p in (spill_dir / HELD_DIR).iterdir() if not p.name.startswith(".")}


def test_a_killed_processor_leaves_no_held_upload_that_no_message_names(tmp_path: Path) -> None:
    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_WRITER, str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    names = killed.stdout.split()
    published, released, never_published = names[:9], names[9], names[10:]
    assert held_files(tmp_path) == {*published, *never_published}
    journals = tmp_path / HELD_DIR / JOURNALS_DIR
    (journal,) = journals.iterdir()
    assert len(journal.read_text().splitlines()) <= 6 + 1  # compacted: not one line per upload
    # A living processor's pending upload is not touched.
    living = HeldUploads(tmp_path, max_bytes=10**9)
    pending = living.hold(upload(100))

    uploader_side = HeldUploads(tmp_path, max_bytes=10**9)
    assert uploader_side.reclaim_unpublished() == 2
    assert held_files(tmp_path) == {*published, pending.file}
    assert released not in held_files(tmp_path)
    # The gone one's journal went; the living one's stays.
    assert len(list(journals.iterdir())) == 1
    assert not journal.exists()
    assert uploader_side.reclaim_unpublished() == 0
    # The published ones are still read by their messages; the bound counts what is left.
    assert uploader_side.load(dataclasses.replace(pending, file=published[0])) is not None
    living.published(pending)
    living.close()  # stopped cleanly with nothing pending: its journal goes with it
    assert list(journals.iterdir()) == []


def test_uploads_held_longer_than_their_queue_lives_are_stored_from_the_spill(
    tmp_path: Path,
) -> None:
    held = HeldUploads(tmp_path, max_bytes=10**9)
    spill = Spill(tmp_path, max_bytes=10**9)
    jobs = [held.hold(upload(number)) for number in range(3)]
    for job in jobs:
        held.published(job)
    tidy_held(held, spill, expiry_s=3600)  # young: their messages will come
    assert held_files(tmp_path) == {job.file for job in jobs}
    assert spill.count() == 0
    tidy_held(held, spill, expiry_s=0)  # older than their queue lives unused
    assert held_files(tmp_path) == set()
    assert sorted(spill.read(path).key for path in spill.oldest(10)) == [  # type: ignore[union-attr]
        "out/0.jpg",
        "out/1.jpg",
        "out/2.jpg",
    ]
    assert spill.read(spill.oldest(1)[0]).payload == bytes(10_000)  # type: ignore[union-attr]


def test_a_journal_that_cannot_be_written_never_fails_a_settled_upload(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    held = HeldUploads(tmp_path, max_bytes=10**9)
    job = held.hold(upload(0))
    (journal,) = (tmp_path / HELD_DIR / JOURNALS_DIR).iterdir()
    journal_fd = os.open(journal, os.O_RDONLY)  # the journal's own descriptor, made read-only:
    os.dup2(journal_fd, held._journal._fd)  # type: ignore[arg-type]  # its next write fails
    os.close(journal_fd)
    held.published(job)  # on pika's thread: must not raise
    assert "could not settle" in caplog.text
