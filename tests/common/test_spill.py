"""Uploads kept on disk stay within spill_max_bytes, counted over every process
of the host that puts into the directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.errors import DiskFull
from common.file_index import INDEX_NAME
from common.messages import UploadJob
from common.spill import HELD_DIR, HeldUploads, Spill


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
