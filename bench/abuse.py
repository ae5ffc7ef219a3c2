"""What an anonymous client can make the service do, open versus as shipped (bench/ABUSE.md).

Two configs of this project, each started for real (bench/servers.Ours, nginx as origin):
- open: the defences of docs/security.md off (any output, no miss budget, no output
  pixel bound, no failure memory): what the service did before them;
- shipped: config/production.json as it is in git (its allowed_outputs, the default
  budget and bounds).
Both believe X-Forwarded-For from loopback, so that each simulated client has an address.

1. The costliest requests one at a time: status, time, processors' CPU and peak memory.
2. How many distinct outputs one unsigned client may have made of one image.
3. The latency of one ordinary client's misses alone, then while 4 clients send the
   costliest requests they can and 5 others spend their whole miss budget.

    python -m bench.abuse [--seconds 60]     # or: make abuse (about 8 minutes)
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import itertools
import os
import statistics
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pyvips
import urllib3

from bench import servers
from common import config
from common.settings import Settings
from common.urls import output_matches, parse_path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
IDS_PER_KIND = 6000
OPEN = {
    "whitelisted_extensions": ["jpg", "png", "webp", "gif", "avif"],
    "allowed_outputs": [],
    "allow_any_output": True,
    "client_miss_rate_per_s": 0,
    "max_output_pixels": {fmt: 10**12 for fmt in ("jpg", "png", "webp", "gif", "avif")},
    "failure_memory_s": 0,
}
COSTLY = [  # (kind of original, output)
    ("gif", "x1000.webp"),
    ("big", "full_size.avif"),
    ("big", "full_size.png"),
    ("big", "full_size-q100.webp"),
    ("big", "full_size.jpg"),
    ("mid", "full_size.webp"),
]


def originals(docroot: Path) -> None:
    """The originals, IDS_PER_KIND ids of each (hard links): every request a new image."""
    photo = (REPO / "samples" / "sample" / "image" / "1" / "original.jpg").read_bytes()
    # A real photograph enlarged to 49 MP, with some grain (what a camera gives).
    grain = pyvips.Image.gaussnoise(7000, 7000, sigma=8, mean=0)
    big = pyvips.Image.new_from_buffer(photo, "").resize(7000 / 1600, vscale=7000 / 1000)
    big = (big + grain).cast("uchar").copy(interpretation="srgb")
    frames = pyvips.Image.black(16, 1600, bands=3)
    for index in range(100):  # distinct frames: a GIF encoder merges equal ones
        frames = frames.draw_rect([255, 255, 255], index % 12, index * 16 + index // 12, 4, 4)
    frames = frames.cast("uchar").copy(interpretation="srgb")
    frames.set_type(pyvips.GValue.gint_type, "page-height", 16)
    made = {
        "big": big.jpegsave_buffer(Q=90),  # 49 MP
        "mid": big.crop(0, 0, 4000, 4000).jpegsave_buffer(Q=90),  # 16 MP
        "gif": frames.gifsave_buffer(),  # 100 frames of 16x16
        "photo": photo,
        "spend": photo,
    }
    for kind, data in made.items():
        first = docroot / "abuse" / kind / "0" / "original.jpg"
        first.parent.mkdir(parents=True, exist_ok=True)
        first.write_bytes(data)
        for index in range(1, IDS_PER_KIND):
            path = docroot / "abuse" / kind / str(index) / "original.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                os.link(first, path)


class Ids:
    """New image ids of one kind, never one twice in a run."""

    def __init__(self) -> None:
        self._next = Counter[str]()
        self._lock = threading.Lock()

    def new(self, kind: str) -> str:
        with self._lock:
            self._next[kind] += 1
            return f"/abuse/{kind}/{self._next[kind] % IDS_PER_KIND}"


def get(path: str, client: str) -> tuple[int, float]:
    started = time.perf_counter()
    answer = urllib3.request(
        "GET",
        f"http://127.0.0.1:{servers.OURS_PORT}{path}",
        headers={"X-Forwarded-For": client},
        retries=False,
        timeout=60,
    )
    return answer.status, time.perf_counter() - started


def costly_requests(ours: servers.Ours, ids: Ids) -> list[dict[str, object]]:
    rows = []
    for kind, output in COSTLY:
        pids = ours.program_pids("processor")
        before = servers.cpu_s(pids)
        with servers.PeakRss(lambda: ours.program_pids("processor")) as peak:
            status, seconds = get(f"{ids.new(kind)}/{output}", "192.0.2.1")
            time.sleep(1.0)  # a job the client gave up on may still run: count it
        rows.append(
            {
                "request": f"{kind} original, {output}",
                "status": status,
                "time_s": round(seconds, 2),
                "processor_cpu_s": round(servers.cpu_s(pids) - before, 2),
                "processors_peak_rss_mb": round(peak.peak_kib / 1024),
            }
        )
        servers.wait_until_idle()
    return rows


def distinct_outputs(settings: Settings) -> int:
    """Outputs of one image an unsigned client may have made: every w, x and full_size
    at every quality in every format, and every WxH at the default quality."""
    patterns = settings.allowed_outputs
    names = set()
    sizes = [f"w{n}" for n in range(1, 1001)] + [f"x{n}" for n in range(1, 1001)] + ["full_size"]
    qualities = [""] + [f"-q{q}" for q in range(1, 101)]
    formats = settings.whitelisted_extensions
    candidates = itertools.chain(
        (f"{size}{q}.{ext}" for size in sizes for q in qualities for ext in formats),
        (f"{w}x{h}.{ext}" for w in range(1, 1001) for h in range(1, 1001) for ext in formats),
    )
    for candidate in candidates:
        name = parse_path(f"/a/b/1/{candidate}", None, settings.default_quality).output_name
        if not patterns or output_matches(name, patterns):
            names.add(name)
    return len(names)


def latency_under_attack(
    ids: Ids, seconds: float, attack: tuple[str, str] | None
) -> dict[str, object]:
    """Ordinary visitors' misses (w500.jpg of new photos, one at a time, each from an
    address of its own), alone or while 4 clients
    send `attack` (kind, output) and 5 spend their miss budget on x300.jpg."""
    stop = time.monotonic() + seconds
    ordinary: list[tuple[int, float]] = []
    others: Counter[str] = Counter()

    def ordinary_clients() -> None:
        """One request at a time, each from a visitor of its own."""
        for visitor in itertools.count():
            if time.monotonic() > stop:
                return
            address = f"10.{visitor >> 16 & 255}.{visitor >> 8 & 255}.{visitor & 255}"
            ordinary.append(get(f"{ids.new('photo')}/w500.jpg", address))

    def attacker(index: int) -> None:
        assert attack is not None
        while time.monotonic() < stop:
            status, _ = get(f"{ids.new(attack[0])}/{attack[1]}", f"203.0.113.{index}")
            others[f"attacker {status}"] += 1

    def spender(index: int) -> None:
        while time.monotonic() < stop:
            status, _ = get(f"{ids.new('spend')}/x300.jpg", f"203.0.114.{index}")
            others[f"spender {status}"] += 1

    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        running = [pool.submit(ordinary_clients)]
        if attack is not None:
            running += [pool.submit(attacker, index) for index in range(4)]
            running += [pool.submit(spender, index) for index in range(5)]
        for future in running:
            future.result()
    times = sorted(seconds for status, seconds in ordinary if status == 200)
    return {
        "ordinary misses": len(ordinary),
        "ordinary statuses": dict(Counter(status for status, _ in ordinary)),
        "ordinary median_s": round(statistics.median(times), 3) if times else None,
        "ordinary p95_s": round(times[int(len(times) * 0.95)], 3) if times else None,
        "others": dict(sorted(others.items())),
    }


def run_config(
    name: str, overrides: dict[str, object], work: Path, seconds: float
) -> dict[str, Any]:
    ours = servers.Ours(work, 2, trusted_proxies=["127.0.0.1/32"], **overrides)
    ours.start()
    ids = Ids()
    try:
        servers.wait_until_idle()
        attack = ("gif", "x1000.webp") if name == "open" else ("big", "full_size.jpg")
        return {
            "costly": costly_requests(ours, ids),
            "alone": latency_under_attack(ids, seconds, None),
            "attack": attack,
            "under attack": latency_under_attack(ids, seconds, attack),
        }
    finally:
        ours.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--work", type=Path, default=BENCH / ".work")
    parser.add_argument("--out", type=Path, default=BENCH / "ABUSE.md")
    args = parser.parse_args()
    nginx = servers.Nginx(args.work)
    originals(nginx.docroot)
    nginx.start()
    # config/production.json as in git (its object storage is not used here).
    as_shipped = config.load("production", environ={"IMAGE_SERVER_STORAGE_BACKEND": "filesystem"})
    shipped_keys = {  # what servers.Ours changes for its benchmarks, put back
        key: getattr(as_shipped, key)
        for key in ("allowed_outputs", "allow_any_output", "client_miss_rate_per_s")
    }
    try:
        results = {
            "open": run_config("open", OPEN, args.work, args.seconds),
            "shipped": run_config("shipped", shipped_keys, args.work, args.seconds),
        }
    finally:
        nginx.stop()
    counts = {
        "open": distinct_outputs(dataclasses.replace(as_shipped, **OPEN)),  # type: ignore[arg-type]
        "shipped": distinct_outputs(as_shipped),
    }
    args.out.write_text(report(results, counts, args.seconds))
    print(args.out.read_text())


def report(results: dict[str, dict[str, Any]], counts: dict[str, int], seconds: float) -> str:
    lines = [
        "# What one anonymous client can make us do (`python -m bench.abuse`)",
        "",
        "Generated by bench/abuse.py on this machine (2 cores): our stack, 2 frontends and 2",
        "processors, `open` (the defences of docs/security.md off) beside `shipped`",
        "(config/production.json as in git). Every request asks a new image.",
        "",
        "## The costliest requests, one at a time",
        "",
        "| config | request | status | time s | processors' CPU s | processors' peak RSS MB |",
        "|---|---|---|---|---|---|",
    ]
    for name, result in results.items():
        for row in result["costly"]:
            lines.append(
                f"| {name} | {row['request']} | {row['status']} | {row['time_s']} | "
                f"{row['processor_cpu_s']} | {row['processors_peak_rss_mb']} |"
            )
    lines += [
        "",
        "## Distinct outputs of one image one unsigned client may have made",
        "",
        "Every w, x and full_size at every quality in every whitelisted format, and every WxH",
        "(1-1000 each side) at the default quality.",
        "",
        f"- open: {counts['open']:,}",
        f"- shipped: {counts['shipped']:,}",
        "",
        f"## Ordinary visitors' misses (w500.jpg of new photos), {seconds:g} s each",
        "",
        "One request at a time, each from an address of its own. Alone, then while 4 clients",
        "ask the costliest output they may (open: x1000.webp of a",
        "100-frame 16x16 GIF; shipped: full_size.jpg of a 49 MP original, the costliest output",
        "its allowed_outputs permit) and 5 clients ask x300.jpg of new photos as fast as they can.",
        "",
        "| config | load | misses | statuses | median s | p95 s | the others' answers |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, result in results.items():
        for load in ("alone", "under attack"):
            row = result[load]
            lines.append(
                f"| {name} | {load} | {row['ordinary misses']} | {row['ordinary statuses']} | "
                f"{row['ordinary median_s']} | {row['ordinary p95_s']} | {row['others']} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
