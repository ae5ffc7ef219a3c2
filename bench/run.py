"""Benchmark: this project against thumbor and the raw libvips limit, in one run.

    make bench                       # fetches the corpus from Debian's packages
    make bench BENCH_ARGS="--corpus DIR --seconds 20"

Writes bench/RESULTS.md and prints it.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import random
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pyvips

from bench import corpus, load, raw, servers
from bench.load import LoadResult

BENCH = Path(__file__).resolve().parent
WIDTHS = range(100, 1001)
QUALITIES = range(80, 90)
MISS_CONNECTIONS = 8
HIT_CONNECTIONS = 32
BURST = 50


@dataclasses.dataclass
class Row:
    scenario: str
    server: str
    result: LoadResult | None = None
    peak_rss_mib: float | None = None
    rate: float | None = None  # for baselines without HTTP: operations per second

    @property
    def rps(self) -> float:
        if self.result is not None:
            return self.result.rps
        return self.rate or 0.0


def image_id(original: corpus.Original) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", Path(original.name).stem)


Job = tuple[str, int, int]  # image id, width, JPEG quality


def jobs_for(
    originals: list[corpus.Original], seed: int, qualities: range = QUALITIES
) -> list[Job]:
    """Every (image, width, quality) once, shuffled: enough distinct URLs for any run."""
    jobs = [(image_id(o), w, q) for o in originals for w in WIDTHS for q in qualities]
    random.Random(seed).shuffle(jobs)
    return jobs


def measure(
    port: int,
    paths: list[str],
    seconds: int,
    connections: int,
    work: Path,
    pids: Callable[[], list[int]],
) -> tuple[LoadResult, float]:
    with servers.PeakRss(pids) as rss:
        result = load.wrk(port, paths, seconds, connections, work)
    return result, rss.peak_kib / 1024


def versions(thumbor_venv: Path) -> dict[str, str]:
    def run(*command: str) -> str:
        done = subprocess.run(command, capture_output=True, text=True)
        return (done.stdout + done.stderr).strip().splitlines()[0] if done.returncode == 0 else "?"

    freeze = subprocess.run(
        [str(thumbor_venv / "bin" / "pip"), "freeze"], capture_output=True, text=True
    ).stdout
    pins = dict(line.split("==", 1) for line in freeze.splitlines() if "==" in line)
    return {
        "python": platform.python_version(),
        "libvips": f"{pyvips.version(0)}.{pyvips.version(1)}.{pyvips.version(2)}",
        "thumbor": pins.get("thumbor", "?"),
        "Pillow": pins.get("pillow", pins.get("Pillow", "?")),
        "nginx": run("nginx", "-v"),
        "wrk": run("wrk", "--version"),
        "rabbitmq": run("rabbitmqctl", "-q", "version"),
    }


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, help="directory of originals (default: Debian's)")
    parser.add_argument("--seconds", type=int, default=20, help="length of each load run")
    parser.add_argument("--thumbor-venv", type=Path, default=BENCH / ".thumbor-venv")
    parser.add_argument("--work", type=Path, default=BENCH / ".work")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    args.work.mkdir(parents=True, exist_ok=True)

    corpus_dir = args.corpus or corpus.fetch_debian(args.work / "debian")
    originals = corpus.describe(corpus_dir)
    jpegs = [o for o in originals if o.loader == "jpegload"]
    big = [o for o in originals if o.width >= 5120]

    nginx = servers.Nginx(args.work)
    shutil.rmtree(nginx.docroot, ignore_errors=True)
    for original in originals:
        target = nginx.docroot / "bench" / "img" / image_id(original) / "original.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(original.path, target)
    ours = servers.Ours(args.work, cores)
    thumbor = servers.Thumbor(args.work, args.thumbor_venv, cores)
    rows: list[Row] = []
    burst_counts: dict[str, str] = {}
    try:
        (nginx.work / "access.log").unlink(missing_ok=True)  # counts are per run
        nginx.start()
        ours.start()
        thumbor.start()
        contenders: list[tuple[str, servers.Ours | servers.Thumbor, int]] = [
            ("ours", ours, servers.OURS_PORT),
            ("thumbor", thumbor, servers.THUMBOR_PORT),
        ]

        # Warm-up: every original fetched once by each side (both keep originals on disk).
        for _name, server, port in contenders:
            for original in originals:
                status, _ = load.fetch(
                    f"http://127.0.0.1:{port}{server.path(image_id(original), 64)}"
                )
                assert status == 200, (server, original.name, status)

        miss_scenarios = [
            ("1. cache miss, JPEG-only", jpegs, 1),
            ("2. cache miss, mixed", originals, 2),
            ("5. cache miss, 5120x2880 only (memory)", big, 5),
        ]
        for title, subset, seed in miss_scenarios:
            if not subset:
                continue
            jobs = jobs_for(subset, seed)
            seconds = args.seconds if not title.startswith("5.") else max(5, args.seconds // 2)
            for name, server, port in contenders:  # alternating, same URLs in the same order
                paths = [server.path(*job) for job in jobs]
                result, peak = measure(
                    port, paths, seconds, MISS_CONNECTIONS, args.work, server.pids
                )
                assert result.requests <= len(paths), "the URL list wrapped: hits in a miss run"
                rows.append(Row(title, name, result, peak))
            files = {image_id(o): o.path for o in subset}
            for from_masters, label in ((False, "originals"), (True, "masters")):
                rate = raw.resizes_per_s(files, jobs, cores, min(args.seconds, 15), from_masters)
                rows.append(Row(title, f"raw libvips from {label}, {cores} workers", rate=rate))

        # 3. Cache hits: a hot set of 100 outputs, made once, then asked again and again.
        hot = jobs_for(jpegs, 3, range(servers.JPEG_QUALITY, servers.JPEG_QUALITY + 1))[:100]
        for name, server, port in contenders:
            paths = [server.path(*job) for job in hot]
            for path in paths:
                assert load.fetch(f"http://127.0.0.1:{port}{path}")[0] == 200
            result, peak = measure(
                port, paths * 50, args.seconds, HIT_CONNECTIONS, args.work, server.pids
            )
            rows.append(Row("3. cache hit, 100 hot outputs", name, result, peak))
        # Baseline: nginx serving the very same 100 output files.
        static_paths = []
        for image, width, _quality in hot:
            cached = ours.work / "cache" / "bench" / "img" / image / f"w{width}.jpg"
            target = nginx.docroot / "hot" / image / f"w{width}.jpg"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(cached, target)
            static_paths.append(f"/hot/{image}/w{width}.jpg")
        nginx_pids = nginx.pids
        result, peak = measure(
            servers.ORIGIN_PORT,
            static_paths * 50,
            args.seconds,
            HIT_CONNECTIONS,
            args.work,
            nginx_pids,
        )
        rows.append(Row("3. cache hit, 100 hot outputs", "nginx static files", result, peak))

        # 4. A burst of 50 identical new URLs.
        for name, server, port in contenders:
            burst_id = f"burst_{name}"
            source = nginx.docroot / "bench" / "img" / image_id(jpegs[0]) / "original.jpg"
            target = nginx.docroot / "bench" / "img" / burst_id / "original.jpg"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
            before = ours.resizes_requested() if name == "ours" else 0
            statuses = load.burst(port, server.path(burst_id, 640), BURST)
            fetched = nginx.hits(f"/bench/img/{burst_id}/original.jpg")
            ok = sum(s == 200 for s in statuses)
            if name == "ours":
                resizes = f"{ours.resizes_requested() - before} resize(s)"
            else:
                resizes = "resizes not observable"
            burst_counts[name] = (
                f"{ok}/{BURST} answered 200; {resizes}; original fetched {fetched} time(s)"
            )
    finally:
        thumbor.stop()
        ours.stop()
        nginx.stop()

    report = render_report(rows, burst_counts, originals, cores, versions(args.thumbor_venv))
    (BENCH / "RESULTS.md").write_text(report)
    print(report)


def render_report(
    rows: list[Row],
    burst_counts: dict[str, str],
    originals: list[corpus.Original],
    cores: int,
    found_versions: dict[str, str],
) -> str:
    lines = [
        "# Benchmark results",
        "",
        f"Generated by `make bench` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        f"Machine: {cores} cores, {cpu_model()}. Versions: "
        + ", ".join(f"{k} {v}" for k, v in found_versions.items())
        + ".",
        "",
        "Both servers get the whole machine (one process per core each, ours also runs one",
        "uploader; RabbitMQ runs beside it and is not counted in our RSS), originals come from",
        f"nginx on loopback, JPEG quality {servers.JPEG_QUALITY}, load from wrk on the same",
        f"machine ({load.WRK_THREADS} threads; {MISS_CONNECTIONS} connections for misses, "
        f"{HIT_CONNECTIONS} for hits).",
        "Cache-miss URLs are all different (image x width 100-1000, shuffled, the same list for",
        "both); each side has fetched every original once before (both keep originals on disk).",
        "",
        "## Corpus",
        "",
        "| file | format | size | bytes |",
        "|---|---|---|---|",
    ]
    for o in originals:
        lines.append(f"| {o.name} | {o.kind} | {o.width}x{o.height} | {o.size_bytes:,} |")
    lines += [
        "",
        "## Results",
        "",
        "| scenario | server | req/s | p50 ms | p95 ms | p99 ms | errors | peak RSS MiB"
        " | response bytes/req | ours / this |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    by_scenario: dict[str, list[Row]] = {}
    for row in rows:
        by_scenario.setdefault(row.scenario, []).append(row)
    for scenario, group in by_scenario.items():
        ours = next(r for r in group if r.server == "ours")
        for row in group:
            r = row.result
            cells = [
                scenario,
                row.server,
                f"{row.rps:.1f}",
                *(f"{v:.1f}" for v in ((r.p50_ms, r.p95_ms, r.p99_ms) if r else ())),
            ]
            if r is None:
                cells += ["", "", ""]
            cells += [
                str(r.errors) if r else "",
                f"{row.peak_rss_mib:.0f}" if row.peak_rss_mib is not None else "",
                f"{r.bytes / max(r.requests, 1):,.0f}" if r else "",
                f"{ours.rps / row.rps:.2f}" if row is not ours and row.rps else "",
            ]
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Coalescing burst (50 identical new URLs at once)", ""]
    lines += [f"- {name}: {text}" for name, text in burst_counts.items()]
    notes = BENCH / "TUNING.md"
    if notes.exists():
        lines += ["", notes.read_text().strip()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
