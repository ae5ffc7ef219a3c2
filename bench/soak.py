"""Soak: new outputs faster than the uploader stores them, for minutes; RabbitMQ stays bounded.

This project (production config, filesystem storage, uploader at
upload_rate_per_s 20) under a steady mix: misses (a new output of a known
image each time) paced at --miss-rate per second, about twice the upload rate,
and cache hits on a hot set as fast as --hit-workers ask. Every 5 s: the depth
of the upload queues, the uploads kept on disk (spill_path) and RabbitMQ's RSS. Per
minute: misses done, their latency, hits. Writes bench/SOAK.md (or --out).
`make soak` runs it (about 5 minutes).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import shutil
import statistics
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from bench import servers
from common import amqp
from testkit import corpus

BENCH = Path(__file__).resolve().parent
SAMPLE_S = 5.0
IMAGES = 40


@dataclasses.dataclass
class Sample:
    at_s: float
    queued: int
    spilled: int
    broker_rss_mib: float


@dataclasses.dataclass
class Done:
    at_s: float
    kind: str  # miss or hit
    ms: float
    status: int


def _queue_depth() -> int:
    listed = subprocess.run(
        ["rabbitmqctl", "-q", "list_queues", "-p", "bench", "name", "messages"],
        capture_output=True,
        text=True,
    ).stdout
    depth = 0
    for line in listed.splitlines():
        name, _, count = line.partition("\t")
        if amqp.is_upload_queue(name):  # image.upload and the host's (uploads by reference)
            depth += int(count)
    return depth


def sample(ours: servers.Ours, started: float, stop: threading.Event, out: list[Sample]) -> None:
    spill = ours.work / "spill"
    while not stop.wait(SAMPLE_S):
        spilled = (
            sum(1 for p in spill.iterdir() if p.is_file() and not p.name.startswith("."))
            if spill.exists()
            else 0
        )
        rss = sum(servers.rss_kib(pid) for pid in servers.broker_pids()) / 1024
        out.append(Sample(time.monotonic() - started, _queue_depth(), spilled, rss))


def hot_paths() -> list[str]:
    return [f"/soak/img/{i % IMAGES}/w{100 + i}.jpg" for i in range(100)]


# Each image's outputs in turn: 801 sizes (200-1000) of each of these shapes, 4,806
# outputs of each image (at 40 misses a second, 80 minutes before one repeats).
SHAPES = ("w{}.jpg", "h{}.jpg", "x{}.jpg", "w{}.webp", "{}x200-fit.jpg", "{}x200-pad.jpg")


def new_output(index: int) -> str:
    """The `index`-th output of an image, none asked twice (nor past maximum_width)."""
    size = 200 + index % 801
    return SHAPES[index // 801 % len(SHAPES)].format(size)


async def load(args: argparse.Namespace, started: float, done: list[Done]) -> None:
    client = AsyncHTTPClient(max_clients=64)
    base = f"http://127.0.0.1:{servers.OURS_PORT}"
    end = started + args.minutes * 60
    hot = hot_paths()

    async def get(path: str, kind: str) -> None:
        began = time.monotonic()
        try:
            response = await client.fetch(base + path, request_timeout=60)
            status = response.code
        except HTTPClientError as exc:
            status = exc.code
        done.append(Done(began - started, kind, (time.monotonic() - began) * 1000, status))

    async def hits() -> None:
        index = 0
        while time.monotonic() < end:
            await get(hot[index % len(hot)], "hit")
            index += 1

    async def misses() -> None:
        tasks = []
        for count in range(10**9):
            due = started + count / args.miss_rate
            if due >= end:
                break
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            path = f"/soak/img/{count % IMAGES}/{new_output(count // IMAGES)}"
            tasks.append(asyncio.ensure_future(get(path, "miss")))
        await asyncio.gather(*tasks)

    await asyncio.gather(misses(), *(hits() for _ in range(args.hit_workers)))


def report(args: argparse.Namespace, samples: list[Sample], done: list[Done]) -> str:
    lines = [
        "# Soak: more new outputs than the upload rate, for minutes",
        "",
        f"`python -m bench.soak --minutes {args.minutes} --miss-rate {args.miss_rate:g} "
        f"--hit-workers {args.hit_workers}` (`make soak`). Ours with the production config "
        "(filesystem storage, upload_rate_per_s 20, upload_backlog_max "
        f"{args.backlog_max}), {len(done)} requests: misses paced at {args.miss_rate:g}/s "
        "(each a new output of one of "
        f"{IMAGES} known images), hits on 100 hot outputs as fast as {args.hit_workers} "
        "clients ask.",
        "",
        "| minute | misses | miss p50 ms | miss p95 ms | miss p99 ms | misses not 200 | hits "
        "| hit p50 ms | image.upload (max) | on disk (max) | RabbitMQ RSS MiB (min-max) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for minute in range(args.minutes):
        window = [d for d in done if minute * 60 <= d.at_s < (minute + 1) * 60]
        misses = sorted(d.ms for d in window if d.kind == "miss")
        hits = sorted(d.ms for d in window if d.kind == "hit")
        failed = sum(1 for d in window if d.kind == "miss" and d.status != 200)
        taken = [s for s in samples if minute * 60 <= s.at_s < (minute + 1) * 60] or samples[-1:]
        rss = [s.broker_rss_mib for s in taken]

        def pct(values: list[float], q: float) -> str:
            return f"{values[min(len(values) - 1, int(q * len(values)))]:.0f}" if values else "-"

        lines.append(
            f"| {minute + 1} | {len(misses)} | {pct(misses, 0.5)} | {pct(misses, 0.95)} | "
            f"{pct(misses, 0.99)} | {failed} | {len(hits)} | {pct(hits, 0.5)} | "
            f"{max(s.queued for s in taken)} | {max(s.spilled for s in taken)} | "
            f"{min(rss):.0f}-{max(rss):.0f} |"
        )
    misses_all = [d.ms for d in done if d.kind == "miss"]
    at_s, slowest_ms = slowest_window([d for d in done if d.kind == "miss"])
    lines += [
        "",
        f"Misses overall: median {statistics.median(misses_all):.0f} ms; "
        f"{sum(1 for d in done if d.status != 200)} answers not 200. The slowest "
        f"{WINDOW_S:.0f} s (a stall a minute's figures would hide): from "
        f"{int(at_s // 60)}:{int(at_s % 60):02d}, miss p50 {slowest_ms:.0f} ms.",
        "",
    ]
    return "\n".join(lines)


WINDOW_S = 10.0


def slowest_window(misses: list[Done]) -> tuple[float, float]:
    """The start of the WINDOW_S whose misses had the highest median, and that
    median (windows of 10 misses or more: not the last few of the run)."""
    windows: dict[int, list[float]] = {}
    for miss in misses:
        windows.setdefault(int(miss.at_s // WINDOW_S), []).append(miss.ms)
    full = {index: values for index, values in windows.items() if len(values) >= 10}
    index, values = max(full.items(), key=lambda item: statistics.median(item[1]))
    return index * WINDOW_S, statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, help="directory of originals (default: Debian's)")
    parser.add_argument("--work", type=Path, default=BENCH / ".work")
    parser.add_argument("--minutes", type=int, default=4)
    parser.add_argument("--miss-rate", type=float, default=40.0, help="new outputs per second")
    parser.add_argument("--hit-workers", type=int, default=8)
    parser.add_argument("--backlog-max", type=int, default=2000, help="upload_backlog_max")
    parser.add_argument("--out", type=Path, default=BENCH / "SOAK.md")
    args = parser.parse_args()
    corpus_dir = args.corpus or corpus.fetch_debian(args.work / "debian")
    jpegs = [o for o in corpus.describe(corpus_dir) if o.loader == "jpegload"]
    nginx = servers.Nginx(args.work)
    shutil.rmtree(nginx.docroot / "soak", ignore_errors=True)
    for index in range(IMAGES):
        target = nginx.docroot / "soak" / "img" / str(index) / "original.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(jpegs[index % len(jpegs)].path, target)
    ours = servers.Ours(args.work, 2, upload_backlog_max=args.backlog_max)
    samples: list[Sample] = []
    done: list[Done] = []
    stop = threading.Event()
    try:
        nginx.start()
        ours.start()
        for path in hot_paths():  # the hot set, made before the clock starts
            with urllib.request.urlopen(f"http://127.0.0.1:{servers.OURS_PORT}{path}") as answer:
                answer.read()
        started = time.monotonic()
        sampler = threading.Thread(target=sample, args=(ours, started, stop, samples))
        sampler.start()
        asyncio.run(load(args, started, done))
        stop.set()
        sampler.join()
    finally:
        stop.set()
        ours.stop()
        nginx.stop()
    text = report(args, samples, done)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
