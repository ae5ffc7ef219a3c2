"""The index of a cache directory: eviction order, bytes after crashes, rebuilds.

Small trees of real files and the real janitor's sweep and walk (ops/janitor.py).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from common.file_index import INDEX_NAME, STALE_NAME, FileIndex
from common.files import write_atomic
from common.keys import OutputRef
from ops.janitor import Budget, Usage, is_output, rebuild, sweep

NOW = time.time()


def output(root: Path, cache_key: str) -> Path:
    return OutputRef.from_cache_key(cache_key).path_under(root)


def written(index: FileIndex, cache_key: str, size: int, used_at: float) -> Path:
    """An output written as the programs write them: whole, renamed, then indexed."""
    path = output(index.directory, cache_key)
    write_atomic(path, b"x" * size)
    os.utime(path, (used_at, used_at))
    index.added(path, size, used_at)
    return path


def outputs(root: Path, max_bytes: int) -> Budget:
    return Budget("outputs", root, max_bytes, is_output)


def test_the_least_recently_used_go_first_and_a_file_read_since_gets_a_second_chance(
    tmp_path: Path,
) -> None:
    index = FileIndex(tmp_path)
    files = [written(index, f"m/t/{i}/w100.jpg", 100, NOW - 1000 + i) for i in range(10)]
    # The oldest was read a while ago (its access time; the index does not know yet).
    os.utime(files[0], (NOW - 500, NOW - 1000))
    usage = Usage()
    sweep(outputs(tmp_path, 700), index, usage, min_age_s=60, now=NOW)
    # 1000 bytes against 700: down to 630, so four go: 1, 2, 3 and 4; not 0, read since.
    assert [path.exists() for path in files] == [True] + [False] * 4 + [True] * 5
    assert (usage.files, usage.bytes_used, usage.evicted_files) == (6, 600, 4)
    assert [tmp_path / entry.name for entry in index.oldest(2)] == files[5:7]


def test_files_in_use_are_never_evicted(tmp_path: Path) -> None:
    index = FileIndex(tmp_path)
    files = [written(index, f"m/t/{i}/w100.jpg", 100, NOW - 10) for i in range(5)]
    usage = Usage()
    sweep(outputs(tmp_path, 100), index, usage, min_age_s=60, now=NOW)
    assert all(path.exists() for path in files) and usage.bytes_used == 500


def test_bytes_used_follow_writes_replacements_and_removals_by_other_processes(
    tmp_path: Path,
) -> None:
    index = FileIndex(tmp_path)
    path = written(index, "m/t/1/w100.jpg", 100, NOW)
    written(index, "m/t/1/w100.jpg", 250, NOW)  # written again: replaced
    other = FileIndex(tmp_path)  # another process of the host
    other.added(output(tmp_path, "m/t/2/w100.jpg"), 50)
    assert index.totals() == (2, 300)
    path.unlink()
    other.removed_starting(OutputRef.from_cache_key("m/t/1/w100.jpg").image.cached_name_prefix)
    other.added(output(tmp_path, "m/t/10/w100.jpg"), 7)
    assert index.totals() == (2, 57)


def test_a_crash_mid_write_leaves_the_bytes_used_true(tmp_path: Path) -> None:
    """A write cut short leaves a hidden temporary file: never indexed nor counted. A
    process that dies between its rename and its row leaves a file the index lacks:
    the walk of a rebuild finds it."""
    index = FileIndex(tmp_path)
    written(index, "m/t/1/w100.jpg", 100, NOW - 1000)
    output(tmp_path, "m/t/2/w100.jpg").parent.mkdir(parents=True)
    (output(tmp_path, "m/t/2/w100.jpg").parent / ".tmp-abc").write_bytes(b"x" * 999)  # killed
    assert index.totals() == (1, 100)
    output(tmp_path, "m/t/3/w100.jpg").parent.mkdir(parents=True)
    output(tmp_path, "m/t/3/w100.jpg").write_bytes(b"x" * 30)  # renamed, then killed
    (tmp_path / STALE_NAME).touch()  # or: a program could not write its row
    assert not index.built()
    assert rebuild(outputs(tmp_path, 10**9), index) == 1
    assert index.built() and index.totals() == (2, 130)


def test_a_deleted_index_is_rebuilt_by_a_walk(tmp_path: Path) -> None:
    index = FileIndex(tmp_path)
    for i in range(50):
        written(index, f"m/t/{i}/w100.jpg", 100 + i, NOW - 1000 + i)
    notes = output(tmp_path, "m/t/0/w100.jpg").parent / "notes.txt"
    notes.write_text("not ours")
    index.close()
    for name in (INDEX_NAME, f"{INDEX_NAME}-wal", f"{INDEX_NAME}-shm"):
        (tmp_path / name).unlink(missing_ok=True)
    fresh = FileIndex(tmp_path)
    assert not fresh.built() and fresh.totals() == (0, 0)
    assert rebuild(outputs(tmp_path, 10**9), fresh) == 50
    assert fresh.totals() == (50, sum(100 + i for i in range(50)))
    # The walk took each file's last use from the disk: the order is kept.
    usage = Usage()
    sweep(outputs(tmp_path, 100 * 40), fresh, usage, min_age_s=60, now=NOW)
    assert not output(tmp_path, "m/t/0/w100.jpg").exists()
    assert output(tmp_path, "m/t/49/w100.jpg").exists()
    assert notes.exists()
