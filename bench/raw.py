"""The raw libvips limit: the same resizes done in-process, one worker per core."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

from common.urls import Fit
from processor import imaging

_originals: dict[str, bytes] = {}


def _init(files: dict[str, Path]) -> None:
    imaging.configure(threads=1)
    for name, path in files.items():
        _originals[name] = path.read_bytes()


def _work(batch: list[tuple[str, int]]) -> int:
    limits = imaging.Limits(frozenset(imaging.LOADERS), 10**9, time.monotonic() + 3600)
    for name, width in batch:
        imaging.render(
            _originals[name], imaging.Rendition(Fit.WIDTH, width, None, "jpg", 85), limits
        )
    return len(batch)


def resizes_per_s(
    files: dict[str, Path], jobs: list[tuple[str, int]], workers: int, seconds: float
) -> float:
    """Resizes per second over `jobs` (cycled) for about `seconds`."""
    batches = [jobs[i : i + 4] for i in range(0, len(jobs), 4)]
    done = 0
    with multiprocessing.get_context("fork").Pool(workers, _init, (files,)) as pool:
        pool.map(_work, batches[: workers * 2])  # warm-up: libraries loaded, caches filled
        started = time.perf_counter()
        for count in pool.imap_unordered(_work, batches):
            done += count
            if time.perf_counter() - started > seconds:
                break
        elapsed = time.perf_counter() - started
        pool.terminate()
    return done / elapsed
