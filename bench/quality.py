"""Output size and quality: bytes and SSIM beside ImageMagick's recipe and thumbor.

For every original of the corpus and every output kind (w500, x600, 300x400,
full_size; jpg and webp): the bytes of each tool's output and its SSIM
(testkit/ssim.py, luma) against a high-quality reference of the same size:
Pillow's Lanczos from the full original, the box centred exactly (for
full_size, the original itself). Then a table of encoder settings (w500),
with the time each takes. Writes bench/QUALITY.md (or --out) and prints it.
`python -m bench.quality` runs it alone; `make bench` runs it after the load
benchmark.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import io
import shutil
import statistics
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from bench import servers
from common import config
from common.formats import LOADERS
from common.settings import Settings
from common.urls import Fit, parse_output
from processor import imaging
from processor.render import encoding
from testkit import corpus, recipe
from testkit.ssim import ssim

BENCH = Path(__file__).resolve().parent
KINDS = ["w500", "x600", "300x400", "full_size"]
FORMATS = ["jpg", "webp"]
THUMBOR_QUALITY = 80  # thumbor's QUALITY default
Image.MAX_IMAGE_PIXELS = None


@dataclasses.dataclass
class Made:
    data: bytes
    ms: float


@functools.cache
def reference(original: Path, width: int, height: int) -> Image.Image:
    """The original scaled to cover width x height by Lanczos, the box exactly centred."""
    image = Image.open(original).convert("RGBA")
    if (width, height) == image.size:
        return image
    scale = max(width / image.width, height / image.height)
    box_w, box_h = width / scale, height / scale
    left, top = (image.width - box_w) / 2, (image.height - box_h) / 2
    box = (left, top, left + box_w, top + box_h)
    return image.resize((width, height), Image.Resampling.LANCZOS, box=box)


def _timed(make: Callable[[], bytes]) -> Made:
    started = time.perf_counter()
    data = make()
    return Made(data, (time.perf_counter() - started) * 1000)


def ours(
    original: Path,
    kind: str,
    fmt: str,
    encoder: imaging.Encoding,
    quality: int,
    target: float = 0.0,
) -> Made:
    spec = parse_output(f"{kind}.{fmt}")
    rendition = imaging.Rendition(
        spec.fit, spec.width, spec.height, fmt, quality, encoder, quality_target=target
    )
    limits = imaging.Limits(frozenset(LOADERS), 10**9, time.monotonic() + 120)
    data = original.read_bytes()
    return _timed(lambda: imaging.render(data, rendition, limits))


def imagemagick(original: Path, kind: str, fmt: str) -> Made:
    command = recipe.command(original, f"{kind}.{fmt}")
    return _timed(lambda: subprocess.run(command, capture_output=True, check=True).stdout)


def thumbor(name: str, kind: str, fmt: str) -> Made:
    spec = parse_output(f"{kind}.{fmt}")
    size = "" if spec.fit is Fit.NONE else f"{spec.width}x{spec.height or 0}/"
    source = f"127.0.0.1:{servers.ORIGIN_PORT}/quality/{name}"
    filters = f"filters:format({'jpeg' if fmt == 'jpg' else fmt}):quality({THUMBOR_QUALITY})"
    url = f"http://127.0.0.1:{servers.THUMBOR_PORT}/unsafe/{size}{filters}/{source}"

    def fetch() -> bytes:
        with urllib.request.urlopen(url, timeout=120) as response:
            return bytes(response.read())

    return _timed(fetch)


@dataclasses.dataclass(frozen=True)
class Scored:
    bytes: int
    ssim: float
    ms: float


@dataclasses.dataclass
class Score:
    """One tool's outputs of one kind, by original."""

    by_original: dict[str, Scored] = dataclasses.field(default_factory=dict)
    excluded: list[str] = dataclasses.field(default_factory=list)

    def add(self, made: Made, original: Path, expected: tuple[int, int]) -> None:
        """Score `made` against the reference of its own size; an output more than a
        pixel away from the `expected` size is another picture: left out, named."""
        size = Image.open(io.BytesIO(made.data)).size
        if abs(size[0] - expected[0]) > 1 or abs(size[1] - expected[1]) > 1:
            self.excluded.append(f"{original.name} ({size[0]}x{size[1]})")
            return
        similarity = ssim(made.data, reference(original, *size))
        self.by_original[original.name] = Scored(len(made.data), similarity, made.ms)


HEADER = (
    "| mean KiB | bytes vs recipe | bytes vs recipe's jpg | mean SSIM | min SSIM | median ms "
    "| left out (another size) |"
)
RULE = "|---|---|---|---|---|---|---|---|---|"


def _rows(labelled: dict[str, Score], baseline: Score, jpeg_baseline: Score) -> list[str]:
    """A row per tool, every figure over the originals that every tool has
    (the recipe's, and the recipe's JPEG of the same kind, included)."""
    scores = [*labelled.values(), baseline, jpeg_baseline]
    names = set.intersection(*(set(score.by_original) for score in scores))
    left_out = sorted({item for score in scores for item in score.excluded})
    base_bytes = statistics.mean(baseline.by_original[n].bytes for n in names)
    jpeg_bytes = statistics.mean(jpeg_baseline.by_original[n].bytes for n in names)
    rows = []
    for label, score in labelled.items():
        scored = [score.by_original[n] for n in names]
        mean_bytes = statistics.mean(s.bytes for s in scored)
        rows.append(
            f"| {label} | {mean_bytes / 1024:.1f} | {mean_bytes / base_bytes:.2f} | "
            f"{mean_bytes / jpeg_bytes:.2f} | "
            f"{statistics.mean(s.ssim for s in scored):.4f} | {min(s.ssim for s in scored):.4f} | "
            f"{statistics.median(s.ms for s in scored):.0f} | {', '.join(left_out)} |"
        )
    return rows


def compare(originals: list[corpus.Original], defaults: Settings) -> list[str]:
    encoder = encoding(defaults)
    lines = ["| output | tool " + HEADER, RULE]
    recipe_jpeg: dict[str, Score] = {}
    for fmt in FORMATS:
        quality = defaults.default_quality[fmt]
        for kind in KINDS:
            scores = {"ours": Score(), "recipe": Score(), "thumbor": Score()}
            for original in originals:
                made = ours(original.path, kind, fmt, encoder, quality)
                size = Image.open(io.BytesIO(made.data)).size
                scores["ours"].add(made, original.path, size)
                scores["recipe"].add(imagemagick(original.path, kind, fmt), original.path, size)
                scores["thumbor"].add(thumbor(original.name, kind, fmt), original.path, size)
            labelled = {
                f"{kind}.{fmt} | ours, Q{quality} (default)": scores["ours"],
                f"{kind}.{fmt} | ImageMagick recipe, Q{recipe.QUALITY}": scores["recipe"],
                f"{kind}.{fmt} | thumbor 7.8, Q{THUMBOR_QUALITY} (default)": scores["thumbor"],
            }
            recipe_jpeg.setdefault(kind, scores["recipe"])  # FORMATS starts with jpg
            lines += _rows(labelled, scores["recipe"], recipe_jpeg[kind])
            print(*lines[-3:], sep="\n", flush=True)
    return lines


# (format, setting, quality, encoder, quality_target); every row is w500 of the whole corpus.
SETTINGS: list[tuple[str, str, int, imaging.Encoding, float]] = [
    ("jpg", "Q75, baseline", 75, imaging.Encoding(), 0),
    ("jpg", "Q78, baseline (default)", 78, imaging.Encoding(), 0),
    ("jpg", "Q80, baseline", 80, imaging.Encoding(), 0),
    ("jpg", "Q85, baseline (the default before)", 85, imaging.Encoding(), 0),
    ("jpg", "Q78, progressive (jpeg_progressive)", 78, imaging.Encoding(jpeg_progressive=True), 0),
    ("jpg", "Q75, trellis (jpeg_trellis)", 75, imaging.Encoding(jpeg_trellis=True), 0),
    ("jpg", "Q80, trellis", 80, imaging.Encoding(jpeg_trellis=True), 0),
    ("jpg", "Q85, trellis", 85, imaging.Encoding(jpeg_trellis=True), 0),
    ("jpg", "Q85, progressive, trellis", 85, imaging.Encoding(True, jpeg_trellis=True), 0),
    ("jpg", "quality_target 0.97", 78, imaging.Encoding(), 0.97),
    ("jpg", "quality_target 0.98", 78, imaging.Encoding(), 0.98),
    ("webp", "Q75, effort 4", 75, imaging.Encoding(webp_effort=4), 0),
    ("webp", "Q80, effort 0", 80, imaging.Encoding(webp_effort=0), 0),
    ("webp", "Q80, effort 2", 80, imaging.Encoding(webp_effort=2), 0),
    ("webp", "Q80, effort 4 (default)", 80, imaging.Encoding(webp_effort=4), 0),
    ("webp", "Q80, effort 6", 80, imaging.Encoding(webp_effort=6), 0),
    ("webp", "quality_target 0.97", 80, imaging.Encoding(), 0.97),
    ("avif", "Q50, effort 2", 50, imaging.Encoding(avif_effort=2), 0),
    ("avif", "Q50, effort 4", 50, imaging.Encoding(avif_effort=4), 0),
    ("avif", "Q60, effort 2 (default)", 60, imaging.Encoding(avif_effort=2), 0),
]  # fmt: skip


def settings_table(originals: list[corpus.Original]) -> list[str]:
    recipe_score = Score()
    sizes = {}
    for original in originals:
        made = ours(original.path, "w500", "jpg", imaging.Encoding(), 75)
        sizes[original.name] = Image.open(io.BytesIO(made.data)).size
        recipe_score.add(
            imagemagick(original.path, "w500", "jpg"), original.path, sizes[original.name]
        )
    labelled = {f"jpg | ImageMagick recipe, Q{recipe.QUALITY} (a whole convert)": recipe_score}
    for fmt, label, quality, encoder, target in SETTINGS:
        score = Score()
        for original in originals:
            made = ours(original.path, "w500", fmt, encoder, quality, target)
            score.add(made, original.path, sizes[original.name])
        labelled[f"{fmt} | {label}"] = score
        print(fmt, label, flush=True)
    return ["| format | setting " + HEADER, RULE, *_rows(labelled, recipe_score, recipe_score)]


def avif_times(originals: list[corpus.Original], defaults: Settings) -> list[str]:
    """The slowest format at the largest output: ms per w1000.avif at the default effort."""
    encoder, quality = encoding(defaults), defaults.default_quality["avif"]
    times = [ours(o.path, "w1000", "avif", encoder, quality).ms for o in originals]
    return [
        f"w1000.avif at Q{quality}, effort {encoder.avif_effort} (defaults), made from each "
        f"original in-process: median {statistics.median(times):.0f} ms, slowest "
        f"{max(times):.0f} ms."
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, help="directory of originals (default: Debian's)")
    parser.add_argument("--thumbor-venv", type=Path, default=BENCH / ".thumbor-venv")
    parser.add_argument("--work", type=Path, default=BENCH / ".work")
    parser.add_argument("--out", type=Path, default=BENCH / "QUALITY.md")
    args = parser.parse_args()
    corpus_dir = args.corpus or corpus.fetch_debian(args.work / "debian")
    originals = corpus.describe(corpus_dir)
    imaging.configure(threads=1)
    # Production's encoder settings; its object storage is not used here.
    defaults = config.load("production", environ={"IMAGE_SERVER_STORAGE_BACKEND": "filesystem"})

    nginx = servers.Nginx(args.work)
    (nginx.docroot / "quality").mkdir(parents=True, exist_ok=True)
    for original in originals:
        shutil.copyfile(original.path, nginx.docroot / "quality" / original.name)
    thumbor_server = servers.Thumbor(args.work, args.thumbor_venv, 1)
    try:
        nginx.start()
        thumbor_server.start()
        comparison = compare(originals, defaults)
    finally:
        thumbor_server.stop()
        nginx.stop()
    settings = settings_table(originals)
    avif = avif_times(originals, defaults)
    version = subprocess.run(["convert", "-version"], capture_output=True, text=True).stdout
    report = "\n".join(
        [
            "# Output size and quality",
            "",
            f"Made by `python -m bench.quality` (also run by `make bench`) on {len(originals)} "
            f"originals ({', '.join(o.name for o in originals)}), one at a time, one core.",
            "SSIM: `testkit/ssim.py` (luma, Gaussian window 11/1.5), against Pillow's Lanczos "
            "from the full original to the output's size, the box exactly centred (full_size: "
            "the original), each output against the reference of its own size (thumbor "
            "rounds 312.5 down where ImageMagick and we round up). Transparency is put "
            "onto white in both.",
            f"Recipe: the original service's `convert -strip -flatten <geometry> -background "
            f"rgba(255,255,255,1) -quality {recipe.QUALITY}` ({version.splitlines()[0]}). "
            "thumbor 7.8.0, Pillow engine, at its default quality "
            f"{THUMBOR_QUALITY}, baseline JPEG (`PROGRESSIVE_JPEG = False`, as in "
            "bench/run.py). An output more than a pixel away from our size is another "
            "picture (Cascade.png's PNG canvas is 3840x2400: the recipe's `-flatten` adds a "
            "white band): it is left out of its tool's figures, named in the last column.",
            "Times: ours is `imaging.render` in-process (decode, resize, encode); the recipe is "
            "a whole `convert` process; thumbor is an HTTP request to one thumbor process "
            "(fetching the original from nginx on loopback): each tool's whole way, not "
            "encoders alone.",
            "",
            "## Every output kind, at each tool's defaults",
            "",
            *comparison,
            "",
            "## Encoder settings, w500 (times include decode and resize: compare rows)",
            "",
            *settings,
            "",
            *avif,
            "",
        ]
    )
    args.out.write_text(report)
    print(report)


if __name__ == "__main__":
    main()
