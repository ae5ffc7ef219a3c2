"""Benchmark: this project against thumbor and the raw libvips limit, in one run.

    make bench                       # fetches the corpus from Debian's packages
    make bench BENCH_ARGS="--corpus DIR --seconds 20"

Writes bench/RESULTS.md and prints it.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import platform
import random
import re
import resource
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pyvips

from bench import load, raw, servers
from bench.load import LoadResult
from bench.profiles import SAMPLES_PER_S, Profile, Profiles
from common import keys
from testkit import corpus

BENCH = Path(__file__).resolve().parent
WIDTHS = range(100, 1001)
QUALITIES = range(80, 90)
MISS_CONNECTIONS = 8
HIT_CONNECTIONS = 32
BURST = 50
COLD_JPEG = "1. cold miss, JPEG originals"
KNOWN_JPEG = "4. new size of a known image, JPEG"
HITS = "7. cache hit, 100 hot outputs"
PRODUCTION_COLD = "9. production-like (S3): cold miss, JPEG originals"
PRODUCTION_KNOWN = "10. production-like (S3): new size of a known image, JPEG"
FOUR_SIZES = (100, 300, 640, 1000)


@dataclasses.dataclass(frozen=True)
class CpuUse:
    """CPU milliseconds per answered request, by program, over one load run."""

    ms_per_request: dict[str, float]
    machine_busy: float  # the share of the machine's cores busy over the run
    # The share of the run's wall time the processors' resize threads were busy
    # (1.0: every processor resizing all the time); ours only.
    resize_busy: float | None


class CpuMeter:
    """CPU seconds of each program (and of the whole machine) across one load run."""

    def __init__(self, programs: dict[str, Callable[[], list[int]]], ours: servers.Ours | None):
        self._programs = programs
        self._ours = ours

    def __enter__(self) -> CpuMeter:
        self._pids = {name: pids() for name, pids in self._programs.items()}
        self._before = self._sample()
        return self

    def __exit__(self, *exc: object) -> None:
        self._after = self._sample()

    def _sample(self) -> dict[str, float]:
        sample = {name: servers.cpu_s(pids) for name, pids in self._pids.items()}
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        sample["wrk"] = children.ru_utime + children.ru_stime  # the only child that ends
        sample["whole machine"] = servers.busy_s()
        sample["resize threads"] = self._ours.resize_busy_s() if self._ours else 0.0
        sample["wall"] = time.monotonic()
        return sample

    def use(self, requests: int, cores: int) -> CpuUse:
        spent = {name: self._after[name] - self._before[name] for name in self._after}
        wall = spent.pop("wall")
        resize_s = spent.pop("resize threads")
        per_request = {name: 1000 * s / max(requests, 1) for name, s in spent.items()}
        machine_busy = spent["whole machine"] / (wall * cores)
        return CpuUse(per_request, machine_busy, resize_s / (wall * cores) if self._ours else None)


@dataclasses.dataclass
class Row:
    scenario: str
    server: str
    result: LoadResult | None = None
    peak_rss_mib: float | None = None
    broker_rss_mib: float | None = None  # RabbitMQ's peak during the run (ours only)
    rate: float | None = None  # for baselines without HTTP: operations per second
    cpu: CpuUse | None = None  # where the CPU went during the run (HTTP runs)

    @property
    def rps(self) -> float:
        if self.result is not None:
            return self.result.rps
        return self.rate or 0.0


def image_id(original: corpus.Original) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", Path(original.name).stem)


Job = tuple[str, int, int]  # image id, width, JPEG quality
Contender = tuple[str, servers.Ours | servers.Thumbor, int]  # name, server, port


def jobs_for(
    originals: list[corpus.Original], seed: int, qualities: range = QUALITIES
) -> list[Job]:
    """Every (image, width, quality) once, shuffled: enough distinct URLs for any run."""
    jobs = [(image_id(o), w, q) for o in originals for w in WIDTHS for q in qualities]
    random.Random(seed).shuffle(jobs)
    return jobs


def selected(only: str, title: str) -> bool:
    return not only or title.split(".")[0] in only.split(",")


def new_images(
    nginx: servers.Nginx, subset: list[corpus.Original], label: str, count: int, seed: int
) -> dict[str, corpus.Original]:
    """`count` image ids never asked before, each a link to a corpus file, in request order."""
    rng = random.Random(seed)
    images = {}
    for n in range(count):
        original = subset[rng.randrange(len(subset))]
        image = f"{label}_{n}"
        target = nginx.docroot / "bench" / "img" / image / "original.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(original.path.resolve())
        images[image] = original
    return images


def one_size_each(images: dict[str, corpus.Original], seed: int) -> list[Job]:
    rng = random.Random(seed)
    return [(image, rng.choice(WIDTHS), servers.JPEG_QUALITY) for image in images]


def four_sizes_each(images: dict[str, corpus.Original]) -> list[Job]:
    """Each image asked in four sizes one after the other by the same wrk thread
    (whose connections send them together, as a page with four sizes would)."""
    groups = [[(image, w, servers.JPEG_QUALITY) for w in FOUR_SIZES] for image in images]
    per_thread = [
        [job for group in groups[t :: load.WRK_THREADS] for job in group]
        for t in range(load.WRK_THREADS)
    ]
    length = min(len(jobs) for jobs in per_thread)
    # paths.lua gives wrk thread t every line n with n % threads == t.
    return [per_thread[t][i] for i in range(length) for t in range(load.WRK_THREADS)]


def run_misses(
    rows: list[Row],
    title: str,
    contenders: list[Contender],
    jobs: list[Job],
    seconds: int,
    work: Path,
    s3: servers.SeaweedS3 | None = None,
) -> None:
    """Both sides, one after the other, the same URLs in the same order."""
    for name, server, port in contenders:
        paths = [server.path(*job) for job in jobs]
        with servers.PeakRss(servers.broker_pids) as broker:
            result, peak, cpu = measure(port, paths, seconds, MISS_CONNECTIONS, work, server, s3)
        assert result.requests <= len(paths), "the URL list wrapped: hits in a miss run"
        broker_mib = broker.peak_kib / 1024 if name == "ours" else None
        rows.append(Row(title, name, result, peak, broker_rss_mib=broker_mib, cpu=cpu))


def measure(
    port: int,
    paths: list[str],
    seconds: int,
    connections: int,
    work: Path,
    server: servers.Ours | servers.Thumbor | servers.Nginx,
    s3: servers.SeaweedS3 | None = None,
) -> tuple[LoadResult, float, CpuUse]:
    servers.wait_until_idle()
    ours = server if isinstance(server, servers.Ours) else None
    programs = cpu_programs(server) | ({"SeaweedFS": s3.pids} if s3 is not None else {})
    with servers.PeakRss(server.pids) as rss, CpuMeter(programs, ours) as cpu:
        result = load.wrk(port, paths, seconds, connections, work)
    return result, rss.peak_kib / 1024, cpu.use(result.requests, os.cpu_count() or 1)


def cpu_programs(
    server: servers.Ours | servers.Thumbor | servers.Nginx,
) -> dict[str, Callable[[], list[int]]]:
    """The processes whose CPU a run of `server` reports, by program."""
    programs: dict[str, Callable[[], list[int]]] = {}
    if isinstance(server, servers.Ours):
        programs.update(our_programs(server))
        programs["RabbitMQ"] = servers.broker_pids
    else:
        programs["thumbor" if isinstance(server, servers.Thumbor) else "server"] = server.pids
    if not isinstance(server, servers.Nginx):
        programs["nginx (origin)"] = functools.partial(servers.pids_named, "nginx")
    return programs


def our_programs(ours: servers.Ours) -> dict[str, Callable[[], list[int]]]:
    """Our Python programs' processes, by program (as the CPU table names them)."""
    return {
        label: functools.partial(ours.program_pids, name)
        for name, label in (
            ("frontend", "frontends"),
            ("processor", "processors"),
            ("uploader", "uploader"),
        )
    }


def profile_cold_misses(
    ours: servers.Ours, nginx: servers.Nginx, jpegs: list[corpus.Original], count: int,
    seconds: int, work: Path,
) -> dict[str, Profile]:  # fmt: skip
    """Our programs sampled by py-spy through a cold JPEG run of their own (new
    images again): the sampling costs a little, so no figure of the results
    comes from it."""
    images = new_images(nginx, jpegs, "profiled", count, 21)
    paths = [ours.path(*job) for job in one_size_each(images, 21)]
    servers.wait_until_idle()
    with Profiles(our_programs(ours), seconds, work) as profiles:
        load.wrk(servers.OURS_PORT, paths, seconds, MISS_CONNECTIONS, work)
    return profiles.heaviest()


def both_sides(ours: servers.Ours, thumbor: servers.Thumbor) -> list[Contender]:
    return [("ours", ours, servers.OURS_PORT), ("thumbor", thumbor, servers.THUMBOR_PORT)]


def warm_up(
    server: servers.Ours | servers.Thumbor, port: int, originals: list[corpus.Original]
) -> None:
    """Every original fetched once (both sides keep it; ours also makes its master
    on the second size)."""
    for original in originals:
        for width in (64, 96):
            status, _ = load.fetch(
                f"http://127.0.0.1:{port}{server.path(image_id(original), width)}"
            )
            assert status == 200, (server, original.name, status)


def production_like(
    rows: list[Row], nginx: servers.Nginx, jpegs: list[corpus.Original], cores: int,
    args: argparse.Namespace, cold_count: int,
) -> None:  # fmt: skip
    """Both sides storing originals and results in the same SeaweedFS over S3 (ours as
    production ships it, thumbor with thumbor-aws): a cold JPEG run, then new sizes of
    known JPEGs, each side on fresh caches."""
    s3 = servers.SeaweedS3(args.work)
    ours = servers.Ours(args.work, cores, **s3.ours_config("ours"))
    thumbor = servers.Thumbor(args.work, args.thumbor_venv, cores, s3=s3)
    try:
        s3.start()
        ours.start()
        thumbor.start()
        contenders = both_sides(ours, thumbor)
        images = new_images(nginx, jpegs, "s3cold", cold_count, 91)
        run_misses(rows, PRODUCTION_COLD, contenders, one_size_each(images, 91), args.seconds,
                   args.work, s3)  # fmt: skip
        for _name, server, port in contenders:
            warm_up(server, port, jpegs)
        run_misses(rows, PRODUCTION_KNOWN, contenders, jobs_for(jpegs, 92), args.seconds,
                   args.work, s3)  # fmt: skip
        servers.wait_until_idle()  # the uploads of the last run stored
        for bucket in ("ours", "thumbor"):
            if not s3.objects(bucket):
                raise RuntimeError(f"nothing was stored in SeaweedFS' bucket {bucket}")
    finally:
        thumbor.stop()
        ours.stop()
        s3.stop()


def versions(thumbor_venv: Path) -> dict[str, str]:
    def run(*command: str) -> str:
        # Some tools (wrk -v) print their version and exit 1: the text is what counts.
        try:
            done = subprocess.run(command, capture_output=True, text=True)
        except OSError:
            return "?"
        found = re.search(r"\d+(\.\d+)+", done.stdout + done.stderr)
        return found.group(0) if found else "?"

    freeze = subprocess.run(
        [str(thumbor_venv / "bin" / "pip"), "freeze"], capture_output=True, text=True
    ).stdout
    pins = dict(line.split("==", 1) for line in freeze.splitlines() if "==" in line)
    return {
        "python": platform.python_version(),
        "libvips": f"{pyvips.version(0)}.{pyvips.version(1)}.{pyvips.version(2)}",
        "thumbor": pins.get("thumbor", "?"),
        "thumbor-aws": pins.get("thumbor-aws", pins.get("thumbor_aws", "?")),
        "Pillow": pins.get("pillow", pins.get("Pillow", "?")),
        "nginx": run("nginx", "-v"),
        "wrk": run("wrk", "-v"),
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
    parser.add_argument(
        "--only", default="", help="comma-separated scenario numbers to run (default: all)"
    )
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
    profiles: dict[str, Profile] = {}
    try:
        (nginx.work / "access.log").unlink(missing_ok=True)  # counts are per run
        nginx.start()
        ours.start()
        thumbor.start()
        contenders = both_sides(ours, thumbor)

        # Cold scenarios first, before either side has seen any original: every
        # request names an image id nobody asked for before (each id a link in
        # nginx's docroot to a corpus file), the same list for both sides.
        cold_count = max(2000, 150 * args.seconds)
        cold_scenarios = [
            (COLD_JPEG, jpegs, 11, False),
            ("2. cold miss, mixed originals", originals, 12, False),
            ("3. new image, then w100, w300, w640, w1000 of it", jpegs, 13, True),
        ]
        for title, subset, seed, four_sizes in cold_scenarios:
            if not selected(args.only, title):
                continue
            images = new_images(nginx, subset, f"cold{seed}", cold_count, seed)
            jobs = four_sizes_each(images) if four_sizes else one_size_each(images, seed)
            run_misses(rows, title, contenders, jobs, args.seconds, args.work)
            if not four_sizes:
                # The same resizes in-process, named by corpus file (not by link).
                files = {image_id(o): o.path for o in subset}
                same = [(image_id(images[image]), w, q) for image, w, q in jobs]
                rate = raw.resizes_per_s(files, same, cores, min(args.seconds, 15), False)
                rows.append(Row(title, f"raw libvips from originals, {cores} workers", rate=rate))

        if selected(args.only, "1."):
            profiles = profile_cold_misses(ours, nginx, jpegs, cold_count, args.seconds, args.work)

        # Warm-up for the scenarios below: every original fetched once by each
        # side (both keep originals on disk; ours also makes masters then).
        for _name, server, port in contenders:
            warm_up(server, port, originals)

        known_scenarios = [
            (KNOWN_JPEG, jpegs, 1),
            ("5. new size of a known image, mixed", originals, 2),
            ("6. new size of a known image, 5120x2880 only", big, 5),
        ]
        for title, subset, seed in known_scenarios:
            if not subset or not selected(args.only, title):
                continue
            jobs = jobs_for(subset, seed)
            seconds = args.seconds if not title.startswith("6.") else max(5, args.seconds // 2)
            run_misses(rows, title, contenders, jobs, seconds, args.work)
            files = {image_id(o): o.path for o in subset}
            for from_masters, label in ((False, "originals"), (True, "masters")):
                rate = raw.resizes_per_s(files, jobs, cores, min(args.seconds, 15), from_masters)
                rows.append(Row(title, f"raw libvips from {label}, {cores} workers", rate=rate))

        # 7. Cache hits: a hot set of 100 outputs, made once, then asked again and again.
        hot = jobs_for(jpegs, 3, range(servers.JPEG_QUALITY, servers.JPEG_QUALITY + 1))[:100]
        for name, server, port in contenders if selected(args.only, "7.") else []:
            paths = [server.path(*job) for job in hot]
            for path in paths:
                assert load.fetch(f"http://127.0.0.1:{port}{path}")[0] == 200
            result, peak, cpu = measure(
                port, paths * 50, args.seconds, HIT_CONNECTIONS, args.work, server
            )
            rows.append(Row(HITS, name, result, peak, cpu=cpu))
        # Baseline: nginx serving the very same 100 output files.
        static_paths = []
        for image, width, _quality in hot if selected(args.only, "7.") else []:
            cache_key = f"bench/img/{image}/w{width}.jpg"
            cached = keys.OutputRef.from_cache_key(cache_key).path_under(ours.work / "cache")
            target = nginx.docroot / "hot" / image / f"w{width}.jpg"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(cached, target)
            static_paths.append(f"/hot/{image}/w{width}.jpg")
        if static_paths:
            result, peak, cpu = measure(
                servers.ORIGIN_PORT,
                static_paths * 50,
                args.seconds,
                HIT_CONNECTIONS,
                args.work,
                nginx,
            )
            rows.append(Row(HITS, "nginx static files", result, peak, cpu=cpu))

        # 8. A burst of 50 identical new URLs.
        for name, server, port in contenders if selected(args.only, "8.") else []:
            burst_id = f"burst_{name}"
            source = nginx.docroot / "bench" / "img" / image_id(jpegs[0]) / "original.jpg"
            target = nginx.docroot / "bench" / "img" / burst_id / "original.jpg"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
            before = ours.resizes_done() if name == "ours" else 0
            statuses = load.burst(port, server.path(burst_id, 640), BURST)
            fetched = nginx.hits(f"/bench/img/{burst_id}/original.jpg")
            ok = sum(s == 200 for s in statuses)
            if name == "ours":
                resizes = f"{ours.resizes_done() - before} resize(s)"
            else:
                resizes = "resizes not observable"
            burst_counts[name] = (
                f"{ok}/{BURST} answered 200; {resizes}; original fetched {fetched} time(s)"
            )
        thumbor.stop()
        ours.stop()
        if selected(args.only, PRODUCTION_COLD) or selected(args.only, PRODUCTION_KNOWN):
            production_like(rows, nginx, jpegs, cores, args, cold_count)
    finally:
        thumbor.stop()
        ours.stop()
        nginx.stop()

    found_versions = versions(args.thumbor_venv)
    report = render_report(rows, burst_counts, profiles, originals, cores, found_versions)
    # Only a full run makes bench/RESULTS.md; a partial one leaves its report in --work.
    (args.work if args.only else BENCH).joinpath("RESULTS.md").write_text(report)
    print(report)


def render_report(
    rows: list[Row],
    burst_counts: dict[str, str],
    profiles: dict[str, Profile],
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
        "uploader; RabbitMQ runs beside it: its peak RSS is its own column, not in ours),",
        f"originals come from nginx on loopback, JPEG quality {servers.JPEG_QUALITY}, both encode",
        "baseline JPEG (thumbor with `PROGRESSIVE_JPEG = False`), load from wrk on the same",
        f"machine ({load.WRK_THREADS} threads; {MISS_CONNECTIONS} connections for misses, "
        f"{HIT_CONNECTIONS} for hits).",
        "Every miss URL is different (the same list for both sides, in the same order):",
        "- 1-3 are cold: run first, every request names an image id nobody asked for before",
        "  (each id a link to a corpus file), so each side downloads and decodes an original;",
        "  in 3 each new image is asked in four sizes at once, as a page would.",
        "- 4-6 are new sizes (width 100-1000 x quality 80-89) of images each side has seen: a",
        "  warm-up asked w64 and w96 of every original first, so both keep the originals on",
        "  disk and ours has made its pre-shrunk masters (thumbor has no such thing).",
        "- 9-10 are 1 and 4 again with both sides storing originals and results in the same",
        "  SeaweedFS over S3 on loopback (its CPU in its own column): ours as production ships",
        "  it (`storage_backend` s3), thumbor with thumbor-aws' storage and result storage.",
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
        " | RabbitMQ peak RSS MiB | response bytes/req | ours / this |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
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
                f"{row.broker_rss_mib:.0f}" if row.broker_rss_mib is not None else "",
                f"{r.bytes / max(r.requests, 1):,.0f}" if r else "",
                f"{ours.rps / row.rps:.2f}" if row is not ours and row.rps else "",
            ]
            lines.append("| " + " | ".join(cells) + " |")
    lines += render_goals(rows, cores)
    lines += render_cpu_table(rows)
    lines += render_profiles(profiles)
    lines += ["", "## Coalescing burst (50 identical new URLs at once)", ""]
    lines += [f"- {name}: {text}" for name, text in burst_counts.items()]
    notes = BENCH / "TUNING.md"
    if notes.exists():
        lines += ["", notes.read_text().strip()]
    return "\n".join(lines) + "\n"


def render_profiles(profiles: dict[str, Profile]) -> list[str]:
    if not profiles:
        return []
    lines = [
        "",
        "## Where our CPU goes on a cold JPEG miss (py-spy)",
        "",
        "A cold JPEG run of its own (new images, not in the tables above), each of our",
        f"programs sampled {SAMPLES_PER_S} times a second by py-spy (bench/profiles.py): the ten",
        "frames most often on top of a sampled stack, as a share of the program's samples.",
        "Time in libvips, the JSON or SQLite module counts on the Python frame that called it.",
    ]
    for program, profile in profiles.items():
        busy = f"{profile.busy_threads:.2f} threads active per sample, py-spy judging"
        lines += ["", f"**{program}** ({busy}, all its processes together)", ""]
        lines += ["| share | frame |", "|---|---|"]
        lines += [f"| {f.share:.1%} | `{f.name}` |" for f in profile.heaviest]
    return lines


CPU_COLUMNS = (
    "frontends",
    "processors",
    "uploader",
    "RabbitMQ",
    "SeaweedFS",
    "thumbor",
    "server",
    "nginx (origin)",
    "wrk",
    "whole machine",
)


def render_goals(rows: list[Row], cores: int) -> list[str]:
    """This run against the goals of issue 35 (the pipeline's tax), each said met or not."""
    found = {(row.scenario, row.server.split(",")[0]): row for row in rows}

    def ratio(scenario: str, other: str) -> float | None:
        ours, them = found.get((scenario, "ours")), found.get((scenario, other))
        return ours.rps / them.rps if ours and them and them.rps else None

    cold = found.get((COLD_JPEG, "ours"))
    cold_cpu = cold.cpu.ms_per_request if cold and cold.cpu else {}
    raw = found.get((COLD_JPEG, "raw libvips from originals"))
    # What the same resize costs raw libvips: its workers keep every core busy.
    raw_ms = cores * 1000 / raw.rps if raw and raw.rps else None
    goals: list[tuple[str, float | None, str, bool | None]] = []

    def at_least(what: str, value: float | None, bound: float) -> None:
        shown = f">= {bound:g}"
        goals.append((what, value, shown, None if value is None else value >= bound))

    def at_most(what: str, value: float | None, bound: float | None, shown: str) -> None:
        met = None if value is None or bound is None else value <= bound
        goals.append((what, value, shown, met))

    at_least("cold JPEG, ours / thumbor", ratio(COLD_JPEG, "thumbor"), 1.2)
    at_least("cold JPEG, ours / raw libvips", ratio(COLD_JPEG, "raw libvips from originals"), 0.8)
    at_least("new size of a known JPEG, ours / thumbor", ratio(KNOWN_JPEG, "thumbor"), 2.5)
    from_masters = ratio(KNOWN_JPEG, "raw libvips from masters")
    at_least("new size of a known JPEG, ours / raw libvips from masters", from_masters, 0.7)
    for program, bound in (("frontends", 1.2), ("RabbitMQ", 1.6), ("uploader", 0.3)):
        at_most(f"cold JPEG, {program} ms per miss", cold_cpu.get(program), bound, f"<= {bound}")
    processors_bound = raw_ms + 1.5 if raw_ms is not None else None
    shown = f"<= raw {raw_ms:.1f} + 1.5" if raw_ms is not None else "<= raw + 1.5"
    at_most(
        "cold JPEG, processors ms per miss", cold_cpu.get("processors"), processors_bound, shown
    )
    at_least("cache hits, ours / thumbor", ratio(HITS, "thumbor"), 4.0)
    lines = [
        "",
        "## The pipeline's tax: issue 35's goals in this run",
        "",
        "| goal | this run | bound | met |",
        "|---|---|---|---|",
    ]
    for what, value, bound_text, met in goals:
        shown_value = "" if value is None else f"{value:.2f}"
        verdict = "" if met is None else ("yes" if met else "no")
        lines.append(f"| {what} | {shown_value} | {bound_text} | {verdict} |")
    return lines


def render_cpu_table(rows: list[Row]) -> list[str]:
    """Where each HTTP run's CPU went: milliseconds per request of each program."""
    lines = [
        "",
        "## Where the CPU goes",
        "",
        "CPU milliseconds (user and system) per answered request of each program over the",
        "same runs; `whole machine` counts every process (so the programs' sum is below it);",
        "`machine busy` is the share of all cores busy; `resize busy` the share of the run's",
        "time the processors' resize threads spent resizing (1.0: every processor all the time).",
        "",
        "| scenario | server | req/s | "
        + " | ".join(CPU_COLUMNS)
        + " | machine busy | resize busy |",
        "|---|---|---|" + "---|" * (len(CPU_COLUMNS) + 2),
    ]
    for row in rows:
        if row.cpu is None:
            continue
        use = row.cpu.ms_per_request
        cells = [row.scenario, row.server, f"{row.rps:.1f}"]
        cells += [f"{use[c]:.2f}" if c in use else "" for c in CPU_COLUMNS]
        cells.append(f"{row.cpu.machine_busy:.2f}")
        cells.append(f"{row.cpu.resize_busy:.2f}" if row.cpu.resize_busy is not None else "")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


if __name__ == "__main__":
    main()
