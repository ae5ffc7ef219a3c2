"""What the disk caches and the spill cost as they grow (bench/SCALE.md).

For trees of 10,000, 100,000 and 1,000,000 outputs (sparse files of 40 KB: a
real size, no blocks) and a spill of uploads, the janitor and the spill as the
programs run them:

- the janitor's steady state: `python -m ops.janitor` itself, sweeping every
  10 s for 40 s with nothing to evict (its CPU per minute at the default 30 s
  interval, and its RSS, from /proc);
- one eviction pass at 10% over the budget (ops.janitor.sweep, in process);
- the rebuild of a deleted index: the walk, paced (its CPU share of a core);
- a processor's spill put at p50 and p99 with that many uploads waiting;
- the uploader's drain (uploader.spilled.drain, filesystem store) against its
  rate limit: uploads stored per second and its CPU.

    python -m bench.scale [--sizes 10000,100000,1000000]   # about 10 minutes
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import config
from common.file_index import Entry, FileIndex
from common.keys import OutputRef
from common.messages import UploadJob
from common.metrics import UploaderFigures
from common.settings import Settings
from common.spill import Spill
from common.storage import open_store
from ops import cache_layout, janitor
from uploader.health import Health
from uploader.ratelimit import RateLimiter
from uploader.spilled import drain

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
OUTPUT_BYTES = 40_000
DRAIN_RATE_PER_S = 20.0  # upload_rate_per_s's default
STEADY_S = 40.0


def settings_for(work: Path, **keys: object) -> Settings:
    return config.from_mapping({
        "source_domain": "http://127.0.0.1/", "local_base_path": str(work / "cache"),
        "originals_path": str(work / "originals"), "spill_path": str(work / "spill"),
        "storage_path": str(work / "storage"), "metrics_path": str(work / "metrics"),
        "janitor_interval_s": 10.0, "eviction_min_age_s": 0.0, "min_free_disk_share": 0.0,
        "upload_rate_per_s": DRAIN_RATE_PER_S, "spill_max_bytes": 10**12, **keys,
    })  # fmt: skip


def build_tree(cache: Path, files: int) -> None:
    """`files` outputs laid out as the frontends write them, indexed as they index them."""
    index = FileIndex(cache)
    now = time.time()
    batch = []
    for number in range(files):
        path = OutputRef.from_cache_key(f"m/t/{number}/w500.jpg").path_under(cache)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as file:
            file.truncate(OUTPUT_BYTES)
        used_at = now - files + number  # oldest first
        os.utime(path, (used_at, used_at))
        batch.append(Entry(path.relative_to(cache).as_posix(), OUTPUT_BYTES, used_at))
    index.rebuilt(batch)
    index.close()
    (cache / cache_layout.MIGRATED).touch()  # of the current layout: the janitor's start knows


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def janitor_steady_state(work: Path, settings: Settings) -> tuple[float, float]:
    """The janitor program's CPU per minute at a 30 s interval, and its RSS (MiB)."""
    (work / "config").mkdir(exist_ok=True)
    raw = {f: getattr(settings, f) for f in ("source_domain", "local_base_path",
           "originals_path", "spill_path", "storage_path", "metrics_path",
           "janitor_interval_s", "eviction_min_age_s", "min_free_disk_share")}  # fmt: skip
    raw["allow_any_output"] = True  # an environment of its own: not development
    raw["cache_max_bytes"] = 10**15  # nothing to evict: the steady state
    (work / "config" / "scale.json").write_text(json.dumps(raw))
    command = [
        sys.executable,
        "-m",
        "ops.janitor",
        "-e",
        "scale",
        "--config-dir",
        str(work / "config"),
    ]
    process = subprocess.Popen(command, cwd=REPO, stderr=subprocess.DEVNULL)
    usage = settings.cache_dir / janitor.USAGE_FILE
    usage.unlink(missing_ok=True)
    try:
        while not usage.exists():  # its first pass done (the layout looked at once, at start)
            if process.poll() is not None:
                raise SystemExit(f"the janitor exited ({process.returncode}): {command}")
            time.sleep(0.5)
        before, started = cpu_s(process.pid), time.monotonic()
        time.sleep(STEADY_S)
        spent_s, took_s = cpu_s(process.pid) - before, time.monotonic() - started
        rss = rss_mib(process.pid)
    finally:
        process.terminate()
        process.wait(30)
    sweeps = took_s / settings.janitor_interval_s
    return spent_s / sweeps * 2, rss  # two sweeps a minute at the default 30 s


def eviction_pass(settings: Settings, files: int) -> tuple[float, int]:
    """One sweep of the outputs at 10% over budget: seconds, files evicted."""
    budget = janitor.Budget(
        "outputs", settings.cache_dir, int(files * OUTPUT_BYTES / 1.1), janitor.is_output
    )
    index, usage = FileIndex(settings.cache_dir, sweeper=True), janitor.Usage()
    started = time.perf_counter()
    janitor.sweep(budget, index, usage, min_age_s=0.0)
    return time.perf_counter() - started, usage.evicted_files


def rebuild_share(settings: Settings) -> tuple[float, float]:
    """The walk of a deleted index: wall seconds, and the share of a core it took."""
    for suffix in ("", "-wal", "-shm"):
        (settings.cache_dir / f".index.sqlite3{suffix}").unlink(missing_ok=True)
    budget = janitor.budgets(settings)[0]
    index = FileIndex(settings.cache_dir)
    started, cpu_started = time.monotonic(), time.thread_time()
    janitor.rebuild(budget, index)
    took_s = time.monotonic() - started
    return took_s, (time.thread_time() - cpu_started) / took_s


def spill_figures(settings: Settings, uploads: int) -> tuple[float, float, float, float]:
    """With `uploads` waiting: a put's p50 and p99 (ms); the drain's rate and CPU share."""
    spill = Spill(settings.spill_dir, settings.spill_max_bytes)
    spill.rebuild_if_needed()  # as the uploader does when it starts, the spill empty
    payload = b"x" * 1000
    for number in range(uploads):
        spill.put(UploadJob(key=f"k/{number}", content_type="image/jpeg", payload=payload))
    times = []
    for number in range(1000):
        upload = UploadJob(key=f"new/{number}", content_type="image/jpeg", payload=payload)
        started = time.perf_counter()
        spill.put(upload)
        times.append(time.perf_counter() - started)
    times.sort()
    stop, cpu = threading.Event(), {}
    store = open_store(settings)
    limiter = RateLimiter(settings.upload_rate_per_s)
    figures, health = UploaderFigures(), Health()
    left_before = spill.count()

    def drained() -> None:
        started = time.thread_time()
        drain(settings, store, limiter, health, figures, stop)
        cpu["s"] = time.thread_time() - started

    thread = threading.Thread(target=drained)
    started = time.monotonic()
    thread.start()
    time.sleep(10.0)
    stop.set()
    thread.join()
    took_s = time.monotonic() - started
    stored = left_before - spill.count()
    return (
        statistics.median(times) * 1000,
        times[int(len(times) * 0.99)] * 1000,
        stored / took_s,
        cpu["s"] / took_s,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--spilled", type=int, default=200_000)
    args = parser.parse_args()
    rows = []
    for files in [int(size) for size in args.sizes.split(",")]:
        work = Path(tempfile.mkdtemp(prefix="scale-", dir="/var/tmp"))
        try:
            settings = settings_for(work)
            build_tree(settings.cache_dir, files)
            cpu_per_min, rss = janitor_steady_state(work, settings)
            rebuild_s, rebuild_cpu = rebuild_share(settings)
            evict_s, evicted = eviction_pass(settings, files)
            rows.append(
                f"| {files:,} outputs | {cpu_per_min * 1000:.0f} ms "
                f"({cpu_per_min / 60:.3%} of a core) "
                f"| {rss:.0f} MiB | {evict_s:.2f} s ({evicted:,} files) "
                f"| {rebuild_s:.0f} s at {rebuild_cpu:.0%} of a core |"
            )
            print(rows[-1], flush=True)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    spill_rows = []
    for uploads in (10_000, args.spilled):
        work = Path(tempfile.mkdtemp(prefix="scale-", dir="/var/tmp"))
        try:
            p50, p99, rate, cpu = spill_figures(settings_for(work), uploads)
            spill_rows.append(
                f"| {uploads:,} uploads waiting | {p50:.2f} ms | {p99:.2f} ms "
                f"| {rate:.0f}/s of {DRAIN_RATE_PER_S:.0f}/s | {cpu:.1%} of a core |"
            )
            print(spill_rows[-1], flush=True)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    write(rows, spill_rows)


def write(rows: list[str], spill_rows: list[str]) -> None:
    head = (BENCH / "SCALE.md").read_text().split("<!-- tables -->")[0]
    tables = [
        "| cache | janitor CPU per minute, steady | janitor RSS | eviction pass, 10% over "
        "| rebuild of a deleted index |",
        "|---|---|---|---|---|",
        *rows,
        "",
        "| spill | put p50 | put p99 | uploader's drain | drain CPU |",
        "|---|---|---|---|---|",
        *spill_rows,
    ]
    (BENCH / "SCALE.md").write_text(head + "<!-- tables -->\n" + "\n".join(tables) + "\n")


if __name__ == "__main__":
    main()
