"""The output cache moves from the layouts of earlier versions to the current one.

Earlier versions kept an image's outputs in a directory of the image: first
`<model>/<imageType>/<id>/` (every id of a type one entry of one directory),
then `<model>/<imageType>/<partition>/<id>/`. common/keys.py now keeps them
as files of the partition's directory, `<partition>/<id>.<output>` (a
directory per image cost a block of disk and of memory each: bench/SCALE.md).
The janitor runs `migrate` when it starts, until it has looked at the whole
cache once (`.layout-files`): each image directory's files are renamed into
their partition (a file the new version has written meanwhile is newer: it
is kept), paced to a quarter of a core; the outputs' index is then rebuilt,
its names having changed. Until an image is moved, its outputs are misses,
answered from object storage.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from common import keys
from common.file_index import INDEX_NAME
from ops.pacing import Pace

log = logging.getLogger(__name__)
MIGRATED = ".layout-files"  # the whole cache was looked at once: never again


def migrate(cache_dir: Path, busy_share: float = 0.25, stop: threading.Event | None = None) -> int:
    """Move the outputs of every image directory under `cache_dir` into their
    partition, paced (the host's requests come first); how many images moved.
    When any did, the outputs' index goes (the janitor rebuilds it). Raises
    ops.pacing.Stopped when `stop` is set meanwhile: the next start goes on."""
    if (cache_dir / MIGRATED).exists():
        return 0
    moved, pace = 0, Pace(busy_share, stop)
    try:
        for directory in _third_level(cache_dir):
            moved += _move_images_of(directory, cache_dir)
            pace.step()
    finally:
        if moved:
            log.info("moved the outputs of %d images of %s to the current layout", moved, cache_dir)
            for suffix in ("", "-wal", "-shm"):
                (cache_dir / f"{INDEX_NAME}{suffix}").unlink(missing_ok=True)
    cache_dir.mkdir(parents=True, exist_ok=True)
    (cache_dir / MIGRATED).touch()
    return moved


def _third_level(cache_dir: Path) -> Iterator[Path]:
    """`<model>/<imageType>/<x>` directories: image directories of the first layout,
    partitions of the others."""
    for model in _entries(cache_dir, directories=True):
        for image_type in _entries(model, directories=True):
            yield from _entries(image_type, directories=True)


def _move_images_of(directory: Path, cache_dir: Path) -> int:
    """Move the images `directory` holds (a partition of the second layout holds
    image directories) or is (an image of the first layout holds outputs and
    source directories); how many. A partition of the current layout holds
    outputs named as it names them: left as they are."""
    moved = 0
    for path in _entries(directory, directories=True):
        if keys.partition(path.name) == directory.name:
            _move_image(path, _entries(path, directories=False), directory)
            moved += 1
    # An image of the first layout; its directory may be a partition of the
    # current layout too (an id like "abc"): those files stay.
    outputs = [
        path
        for path in _entries(directory, directories=False)
        if keys.cached_output(path.relative_to(cache_dir).as_posix()) is None
    ]
    sourced = any(keys.is_source_dir(path.name) for path in _entries(directory, directories=True))
    if outputs or sourced:
        _move_image(directory, outputs, directory.parent / keys.partition(directory.name))
        moved += 1
    return moved


def _move_image(image_dir: Path, outputs: list[Path], partition_dir: Path) -> None:
    """Rename the `outputs` of `image_dir` (and those of its source directories) to
    the files the current layout names in `partition_dir`; remove the emptied
    directories."""
    partition_dir.mkdir(parents=True, exist_ok=True)
    for path in outputs:
        _rename(path, partition_dir / f"{image_dir.name}.{path.name}")
    for source_dir in _entries(image_dir, directories=True):
        if not keys.is_source_dir(source_dir.name):
            continue
        for path in _entries(source_dir, directories=False):
            _rename(path, partition_dir / f"{image_dir.name}.{source_dir.name}.{path.name}")
        with contextlib.suppress(OSError):
            source_dir.rmdir()
    with contextlib.suppress(OSError):  # a foreign file stays, and its directory
        image_dir.rmdir()


def _rename(path: Path, target: Path) -> None:
    """Move `path` to `target`, unless the new version has written `target`
    already (it is newer: kept)."""
    if target.exists():
        path.unlink()
    else:
        os.rename(path, target)


def _entries(directory: Path, directories: bool) -> list[Path]:
    """The subdirectories (or the files) of `directory`; hidden ones are not ours
    (temporary files, locks, the index)."""
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return []
    kind = os.DirEntry.is_dir if directories else os.DirEntry.is_file
    return [
        Path(entry.path)
        for entry in entries
        if not entry.name.startswith(".") and kind(entry, follow_symlinks=False)
    ]
