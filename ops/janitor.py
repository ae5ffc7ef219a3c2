"""Disk budgets: the janitor keeps each per-host cache directory within its budget.

`python -m ops.janitor -e <env>` (the supervisord program `janitor`, one
per host) sweeps, every `janitor_interval_s`: the output cache
(`local_base_path`, budget `cache_max_bytes`), the originals
(`originals_path`, `originals_max_bytes`) and the masters (`masters/` under
it, `masters_max_bytes`). Past a budget it removes the least recently used
files (by access time: readers touch what they use, see
`common.files.touch`) until the directory is 10% under its budget. It also
keeps `min_free_disk_share` of each filesystem free (bytes and inodes):
when a disk holds less, whatever filled it, it evicts past the budgets,
outputs first, then masters, then originals.

It removes only files whose names its own layout made (common/keys.py): a
cache directory shared with other files by mistake keeps them. It never
blocks a request: it runs in its own process. It never removes a
file being written (producers write a hidden temporary file and rename it;
hidden files and lock directories are not swept), nor one used in the last
`eviction_min_age_s` (just written, or just read). A reader that opened a
file before it was removed reads it whole (POSIX keeps an open file until
it is closed).

It never walks the directories either, but to rebuild an index: the programs
that write and remove files keep an index of each directory
(common/file_index.py), and a sweep reads the bytes used and the least
recently used files from it, so that its cost follows what it evicts, not
how many files there are. A file read since it was indexed (a newer access
time) gets a second chance instead of going. A directory without a built
index is walked into it once, paced to a quarter of a core. An evicted
output is a miss again: object storage still has it. Each sweep's figures
(bytes used, files evicted) go to `<local_base_path>/.disk-usage.json` for
the status page.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from common import keys, program, urls
from common.errors import ImageServerError
from common.file_index import Entry, FileIndex
from common.files import space_of, write_atomic
from common.formats import CONTENT_TYPES
from common.settings import Settings
from ops import cache_layout
from ops.pacing import Pace, Stopped

log = logging.getLogger("janitor")
LOW_WATER = 0.9  # a sweep stops this far under the budget, so it does not run on every file
USAGE_FILE = ".disk-usage.json"
EVICTION_BATCH = 8192  # rows read, then settled, in one transaction (bench/SCALE.md)
REBUILD_BUSY_SHARE = 0.25  # a rebuild's walk takes at most a quarter of a core


def is_output(relative: str) -> bool:
    """Whether `relative`, under local_base_path, is where an output is cached."""
    output = keys.cached_output(relative)
    if output is None:
        return False
    try:
        request = urls.parse_path(f"/{output.image.kind}/{output.image.id}/{output.name}")
    except ImageServerError:
        return False
    return request.output.format in CONTENT_TYPES


@dataclasses.dataclass(frozen=True)
class Budget:
    name: str
    directory: Path
    max_bytes: int
    ours: Callable[[str], bool]  # a path under `directory` that the layout makes
    skip: frozenset[str] = frozenset()  # top-level directories swept by another budget


@dataclasses.dataclass
class Usage:
    bytes_used: int = 0
    files: int = 0
    evicted_files: int = 0  # since the janitor started
    evicted_bytes: int = 0


def budgets(settings: Settings) -> list[Budget]:
    """The budgets, in the order they give up files to keep a disk's free share:
    outputs (object storage has them), masters (made again from an original),
    originals (object storage or the source has them)."""
    return [
        Budget("outputs", settings.cache_dir, settings.cache_max_bytes, is_output),
        Budget("masters", keys.masters_dir(settings), settings.masters_max_bytes, keys.is_master),
        Budget(
            "originals",
            settings.originals_dir,
            settings.originals_max_bytes,
            keys.is_kept_original,
            frozenset({"masters"}),
        ),
    ]


def to_free(directory: Path, min_free_share: float) -> int:
    """Bytes to evict for `directory`'s filesystem to have `min_free_share` of it free
    again (and a margin, so that it does not sweep at every pass); 0 when it has."""
    if not min_free_share:
        return 0
    space = space_of(directory)
    if space.free_share >= min_free_share:
        return 0
    wanted = space.total_bytes * min_free_share / LOW_WATER
    return max(1, int(wanted - space.free_bytes))


def _files(budget: Budget) -> Iterator[os.DirEntry[str]]:
    """Every finished file under the budget's directory (no hidden file or directory)
    that the layout made."""
    pending = [budget.directory]
    start = len(str(budget.directory)) + 1  # where a path under it begins
    top = True
    while pending:
        directory = pending.pop()
        try:
            entries = list(os.scandir(directory))
        except FileNotFoundError:
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue  # temporary files, locks, the usage file
            if entry.is_dir(follow_symlinks=False):
                if not (top and entry.name in budget.skip):
                    pending.append(Path(entry.path))
            elif entry.is_file(follow_symlinks=False) and budget.ours(entry.path[start:]):
                yield entry
        top = False


def rebuild(
    budget: Budget,
    index: FileIndex,
    busy_share: float = REBUILD_BUSY_SHARE,
    stop: threading.Event | None = None,
) -> int:
    """Walk the budget's directory into its index (the files the index lacks),
    paced to at most `busy_share` of a core; how many were added. Raises Stopped
    when `stop` is set meanwhile (the index stays unbuilt: the next start walks again)."""
    return index.rebuilt(_paced(_walked(budget), Pace(busy_share, stop)))


def _walked(budget: Budget) -> Iterator[Entry]:
    start = len(str(budget.directory)) + 1
    for entry in _files(budget):
        try:
            stat = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue  # removed meanwhile
        yield Entry(entry.path[start:], stat.st_size, max(stat.st_atime, stat.st_mtime))


def _paced(entries: Iterator[Entry], pace: Pace) -> Iterator[Entry]:
    for entry in entries:
        yield entry
        pace.step()


def sweep(
    budget: Budget,
    index: FileIndex,
    usage: Usage,
    min_age_s: float,
    now: float | None = None,
    free_bytes: int = 0,
) -> None:
    """Bring `budget.directory` under its budget, least recently used first; and
    evict `free_bytes` more when its disk needs them (however far under budget).
    Only the index is read: what it costs depends on what is evicted, not on how
    many files there are."""
    now = time.time() if now is None else now
    _, used = index.totals()
    target = budget.max_bytes * LOW_WATER if used > budget.max_bytes else used
    target = min(target, used - free_bytes)
    in_use = False
    directory = str(budget.directory)  # joined as strings: a Path per file costs as much as a stat
    while used > target and not in_use:
        batch = index.oldest(EVICTION_BATCH)
        if not batch:
            break
        gone: list[str] = []
        used_again: list[tuple[str, float]] = []
        for entry in batch:
            if used <= target:
                break
            outcome, used_at = _evict(os.path.join(directory, entry.name), entry, now, min_age_s)
            if outcome == "in use":
                in_use = True  # everything after it is as recent
                break
            if outcome == "used again":
                used_again.append((entry.name, used_at))
                continue
            gone.append(entry.name)
            used -= entry.size
            if outcome == "evicted":
                usage.evicted_files += 1
                usage.evicted_bytes += entry.size
        index.settle(gone, used_again)
    index.shrink_memory()
    usage.files, usage.bytes_used = index.totals()


def _evict(path: str, entry: Entry, now: float, min_age_s: float) -> tuple[str, float]:
    """Remove the file of `entry` unless it was used since it was indexed (it gets
    a second chance) or is in use; what happened, and when the file was last used."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return "gone", 0.0  # removed by other means (a purge, by hand)
    used_at = max(stat.st_atime, stat.st_mtime)
    if used_at > entry.used_s + 1:
        return "used again", used_at
    if now - used_at < min_age_s:
        return "in use", used_at
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    return "evicted", used_at


def run(settings: Settings, stop: threading.Event) -> None:
    """Sweep every budget, write the figures, wait; until `stop` is set. A budget
    whose index is not built is walked into it first (paced)."""
    try:
        _sweep_until_stopped(settings, stop)
    except Stopped:
        log.info("stopped during a walk: it goes on at the next start")


def _sweep_until_stopped(settings: Settings, stop: threading.Event) -> None:
    cache_layout.migrate(settings.cache_dir, stop=stop)  # before the index: its names may change
    usage = {budget.name: Usage() for budget in budgets(settings)}
    indexes = {b.name: FileIndex(b.directory, sweeper=True) for b in budgets(settings)}
    while True:
        report: dict[str, object] = {"updated_epoch_s": time.time()}
        for budget in budgets(settings):
            index, figures = indexes[budget.name], usage[budget.name]
            if not index.built():
                log.info("%s: rebuilding the index of %s", budget.name, budget.directory)
                added = rebuild(budget, index, stop=stop)
                log.info("%s: index rebuilt, %d files added", budget.name, added)
            before = figures.evicted_files
            free_bytes = to_free(budget.directory, settings.min_free_disk_share)
            sweep(budget, index, figures, settings.eviction_min_age_s, free_bytes=free_bytes)
            if figures.evicted_files > before:
                log.info("%s: evicted %d files, %d bytes used", budget.name,
                         figures.evicted_files - before, figures.bytes_used)  # fmt: skip
            report[budget.name] = {**dataclasses.asdict(figures), "max_bytes": budget.max_bytes}
        write_atomic(settings.cache_dir / USAGE_FILE, json.dumps(report).encode())
        if stop.wait(settings.janitor_interval_s):
            return


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    args = program.parse_program_args(__doc__.splitlines()[0], argv, prog)
    settings = program.load_settings(args)
    program.configure_logging(settings, "janitor")
    run(settings, program.stop_event_on_signals())
    log.info("stopped")


if __name__ == "__main__":
    main()
