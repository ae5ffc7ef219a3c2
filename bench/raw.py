"""The raw libvips limit: the same resizes done in-process, one worker per core.

Two limits: from the originals (what any libvips server must do for a new
image), and from pre-shrunk masters (what this project does for every size
after the first of an image).
"""

from __future__ import annotations

import multiprocessing
import tempfile
import time
from pathlib import Path

from common.formats import LOADERS
from common.urls import Fit
from processor import imaging

_sources: dict[str, bytes | Path] = {}
_LIMITS_S = 3600


def _limits() -> imaging.Limits:
    return imaging.Limits(frozenset(LOADERS), 10**9, time.monotonic() + _LIMITS_S)


def _init(sources: dict[str, bytes | Path]) -> None:
    imaging.configure(threads=1)
    _sources.update(sources)


def _work(batch: list[tuple[str, int, int]]) -> int:
    limits = _limits()
    for name, width, quality in batch:
        rendition = imaging.Rendition(Fit.WIDTH, width, None, "jpg", quality)
        source = _sources[name]
        if isinstance(source, Path):
            imaging.render_master(source, rendition, limits)
        else:
            imaging.render(source, rendition, limits)
    return len(batch)


def resizes_per_s(
    files: dict[str, Path],
    jobs: list[tuple[str, int, int]],
    workers: int,
    seconds: float,
    from_masters: bool,
    short_side: int = 1000,
) -> float:
    """Resizes per second over `jobs`, for about `seconds`."""
    with tempfile.TemporaryDirectory() as tmp:
        sources: dict[str, bytes | Path] = {}
        for name, path in files.items():
            data = path.read_bytes()
            master = Path(tmp) / f"{name}.v"
            if from_masters and imaging.make_master(data, short_side, _limits(), master):
                sources[name] = master
            else:
                sources[name] = data
        return _measure(sources, jobs, workers, seconds)


def _measure(
    sources: dict[str, bytes | Path], jobs: list[tuple[str, int, int]], workers: int, seconds: float
) -> float:
    batches = [jobs[i : i + 4] for i in range(0, len(jobs), 4)]
    done = 0
    with multiprocessing.get_context("spawn").Pool(workers, _init, (sources,)) as pool:
        pool.map(_work, batches[: workers * 2])  # warm-up: libraries loaded, caches filled
        started = time.perf_counter()
        for count in pool.imap_unordered(_work, batches[workers * 2 :]):
            done += count
            if time.perf_counter() - started > seconds:
                break
        elapsed = time.perf_counter() - started
        pool.terminate()
    return done / elapsed
