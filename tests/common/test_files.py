"""KeyLock: mutual exclusion between processes, and no lock file left behind."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import time
from pathlib import Path

from common.files import KeyLock, directory_identity


def _contend(lock_dir: str, inside: str, rounds: int) -> int:
    """Take the lock `rounds` times; inside it, check that nobody else is inside."""
    overlaps = 0
    marker = Path(inside)
    for _ in range(rounds):
        lock = KeyLock(Path(lock_dir), "one key")
        assert lock.acquire_before(time.monotonic() + 60, poll_s=0.0005)
        try:
            if marker.exists():
                overlaps += 1
            marker.touch()
            time.sleep(0.0002)
            marker.unlink()
        finally:
            lock.release()
    return overlaps


def test_one_holder_at_a_time_across_processes_and_no_files_left(tmp_path: Path) -> None:
    lock_dir = tmp_path / "locks"
    args = (str(lock_dir), str(tmp_path / "inside"), 150)
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        overlaps = pool.starmap(_contend, [args] * 4)
    assert overlaps == [0, 0, 0, 0]
    assert list(lock_dir.iterdir()) == []


def test_a_held_lock_is_not_taken_and_comes_free_on_release(tmp_path: Path) -> None:
    first, second = KeyLock(tmp_path, "k"), KeyLock(tmp_path, "k")
    assert first.try_acquire()
    assert not second.try_acquire()
    assert not second.acquire_before(time.monotonic() + 0.1)
    first.release()
    assert second.try_acquire()
    assert KeyLock(tmp_path, "other key").try_acquire()  # keys are independent
    second.release()


def test_every_process_that_sees_a_cache_directory_gives_it_the_same_identity(
    tmp_path: Path,
) -> None:
    """Made once by whichever asks first (here eight at once), then read by all; another
    directory (another host's cache) has its own."""
    with concurrent.futures.ProcessPoolExecutor(8) as pool:
        identities = set(pool.map(directory_identity, [tmp_path / "cache"] * 8))
    assert len(identities) == 1
    assert directory_identity(tmp_path / "cache") in identities
    assert directory_identity(tmp_path / "elsewhere") not in identities
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [".identity"]
