"""The output cache moved from the flat layout of earlier versions to the partitioned one.

Earlier versions kept an image's outputs in `<model>/<imageType>/<id>/`: every id
of a type one entry of one directory (twenty million products, twenty million
entries). common/keys.py now puts them in `<model>/<imageType>/<partition>/<id>/`,
as object keys are. The janitor runs `migrate` when it starts, until it has
looked at the whole cache once (`.layout-partitioned`): each flat image
directory is renamed under its partition (merged into one the new version has
begun meanwhile, the newer file kept), paced to a quarter of a core; the
outputs' index is then rebuilt, its names having changed. Until an image is
moved, its outputs are misses, answered from object storage.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

from common import keys
from common.file_index import INDEX_NAME

log = logging.getLogger(__name__)
_BATCH = 1000
MIGRATED = ".layout-partitioned"  # the whole cache was looked at once: never again


def migrate(cache_dir: Path, busy_share: float = 0.25) -> int:
    """Move every flat image directory under `cache_dir` to its partition; how many
    moved. When any did, the outputs' index goes (the janitor rebuilds it)."""
    if (cache_dir / MIGRATED).exists():
        return 0
    moved = 0
    batch_started = time.thread_time()
    for looked, directory in enumerate(_third_level(cache_dir), 1):
        if _is_flat_image(directory):
            _move(directory, directory.parent / keys.partition(directory.name) / directory.name)
            moved += 1
        if looked % _BATCH == 0:  # paced: the hosts' requests come first
            time.sleep((time.thread_time() - batch_started) * (1 / busy_share - 1))
            batch_started = time.thread_time()
    if moved:
        log.info("moved %d image directories of %s to the partitioned layout", moved, cache_dir)
        for suffix in ("", "-wal", "-shm"):
            (cache_dir / f"{INDEX_NAME}{suffix}").unlink(missing_ok=True)
    cache_dir.mkdir(parents=True, exist_ok=True)
    (cache_dir / MIGRATED).touch()
    return moved


def _third_level(cache_dir: Path) -> Iterator[Path]:
    """`<model>/<imageType>/<x>` directories: image directories of the flat layout,
    partitions of the new one."""
    for model in _subdirectories(cache_dir):
        for image_type in _subdirectories(model):
            yield from _subdirectories(image_type)


def _subdirectories(directory: Path) -> list[Path]:
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [
        Path(entry.path)
        for entry in entries
        if not entry.name.startswith(".") and entry.is_dir(follow_symlinks=False)
    ]


def _is_flat_image(directory: Path) -> bool:
    """A flat image directory holds outputs (files) or an explicit source's
    directory; a partition holds image directories only."""
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_file(follow_symlinks=False) or keys.is_source_dir(entry.name):
                return True
    return False


def _move(source: Path, target: Path) -> None:
    """Rename `source` to `target`; into it, file by file, when the new version has
    made `target` already (its files are newer: they are kept)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(source, target)
        return
    except OSError:  # target exists and is not empty
        pass
    for entry in list(os.scandir(source)):
        path, there = Path(entry.path), target / entry.name
        if entry.is_dir(follow_symlinks=False):
            _move(path, there)
        elif there.exists():
            path.unlink()
        else:
            os.rename(path, there)
    with contextlib.suppress(OSError):
        source.rmdir()
