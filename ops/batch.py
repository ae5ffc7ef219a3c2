"""Batch work over object storage: `image-server regenerate` and `image-server migrate-keys`.

`regenerate`: list the originals in object storage under a prefix (page by
page), and queue a background job for each of the given outputs of each:
any number of processors, on any hosts, do the work (image.resize.background,
taken only while they have no request's job). Outputs already stored are
skipped unless `--replace` (new versions, e.g. after a quality change). A
cursor file records the last original fully queued: an interrupted run
(Ctrl-C, SIGTERM: it finishes the original in hand) continues from there
when started again with the same arguments, queuing nothing twice.

`migrate-keys`: move objects of the flat layout of earlier versions
(`<model>/<imageType>/<id>/<output>`, originals in `.originals/<sha256>`) to
the partitioned one (common/storage.py), copying then deleting each.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import threading
import time
from pathlib import Path

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel

from common import amqp, jobs, program
from common.errors import ImageServerError
from common.files import write_atomic
from common.formats import CONTENT_TYPES
from common.keys import (
    ORIGINAL_NAME,
    PARTITIONS,
    ImageRef,
    explicit_original_key,
    parse_flat_object_key,
    parse_object_key,
    partition,
)
from common.settings import REPO_ROOT, Settings
from common.storage import ObjectStore, open_store
from common.urls import canonical_name, check_allowed, parse_output, parse_path


@dataclasses.dataclass
class Summary:
    originals: int = 0
    queued: int = 0
    skipped: int = 0  # already in object storage
    failed: int = 0  # RabbitMQ refused the job

    def line(self) -> str:
        return (
            f"originals {self.originals}, queued {self.queued}, skipped {self.skipped}, "
            f"failed {self.failed}"
        )


def original_image(settings: Settings, key: str) -> ImageRef | None:
    """The image whose original `key` is, else None."""
    parsed = parse_object_key(settings, key)
    return parsed[0] if parsed is not None and parsed[1] == ORIGINAL_NAME else None


def output_names(settings: Settings, names: str) -> list[str]:
    """The canonical names of `names` (comma-separated); ValueError on a bad one."""
    canonical = []
    for name in filter(None, names.split(",")):
        try:
            spec = parse_output(name)
            check_allowed(spec, settings.whitelisted_extensions, settings.maximum_width)
        except ImageServerError as exc:
            raise ValueError(f"output {name!r}: {exc.message}") from exc
        canonical.append(canonical_name(spec, settings.default_quality))
    if not canonical:
        raise ValueError("name the outputs: --outputs x300.jpg,w500.webp")
    return canonical


class Cursor:
    """The last original fully queued, for the run of these arguments."""

    def __init__(self, path: Path, run: dict[str, object]) -> None:
        self._path = path
        self._run = run

    def load(self) -> str:
        try:
            saved = json.loads(self._path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return ""
        if saved.get("run") != self._run:
            raise SystemExit(
                f"{self._path} belongs to another run ({saved.get('run')}): "
                "delete it, or give another --cursor"
            )
        return str(saved.get("after", ""))

    def save(self, after: str) -> None:
        write_atomic(self._path, json.dumps({"run": self._run, "after": after}).encode())

    def finish(self) -> None:
        self._path.unlink(missing_ok=True)


class Progress:
    """How far through the key space (by partition) and the counts: one line redrawn on
    a terminal, a plain line every PLAIN_LINE_S otherwise (a log, a pipe)."""

    PLAIN_LINE_S = 10.0

    def __init__(self) -> None:
        self._started = time.monotonic()
        self._plain_line_at = 0.0

    def show(self, summary: Summary, image: ImageRef) -> None:
        share = int(partition(image.id), 16) / PARTITIONS
        rate = summary.queued / max(time.monotonic() - self._started, 1e-3)
        if sys.stderr.isatty():
            bar = "#" * int(share * 30)
            sys.stderr.write(f"\r[{bar:<30}] {share:4.0%} {summary.line()}, {rate:.1f} jobs/s ")
        elif time.monotonic() - self._plain_line_at >= self.PLAIN_LINE_S:
            self._plain_line_at = time.monotonic()
            sys.stderr.write(f"{share:4.0%} {summary.line()}, {rate:.1f} jobs/s\n")
        sys.stderr.flush()


def regenerate(
    settings: Settings,
    store: ObjectStore,
    channel: BlockingChannel,
    args: argparse.Namespace,
    outputs: list[str],
    stop: threading.Event,
) -> tuple[Summary, bool]:
    """Queue the jobs of `outputs` (canonical names); the summary, and whether the
    whole prefix was done."""
    prefix = f"{settings.storage_key_prefix}/{args.prefix.strip('/')}/"
    run = {"prefix": prefix, "outputs": outputs, "replace": args.replace}
    cursor = Cursor(args.cursor, run)
    after = cursor.load()
    summary, progress, interval_s = Summary(), Progress(), 1.0 / args.rate
    next_job = time.monotonic()
    while not stop.is_set():
        page = store.keys(prefix, start_after=after, limit=args.page)
        if not page:
            cursor.finish()
            return summary, True
        for key in page:
            if stop.is_set():
                return summary, False
            image = original_image(settings, key)
            after = key
            if image is None:
                continue
            for name in outputs:
                path = f"/{image.kind}/{image.id}/{name}"
                request = parse_path(path, None, settings.default_quality)
                if not args.replace and store.exists(request.ref.object_key(settings)):
                    summary.skipped += 1
                    continue
                time.sleep(max(0.0, next_job - time.monotonic()))
                next_job = max(next_job, time.monotonic()) + interval_s
                job = jobs.resize_job(
                    settings, request, settings.background_deadline_s, True, args.replace
                )
                try:
                    channel.basic_publish(
                        "", amqp.BACKGROUND_QUEUE, job.encode(), amqp.persistent()
                    )
                    summary.queued += 1
                except pika.exceptions.NackError:
                    summary.failed += 1
            summary.originals += 1
            cursor.save(after)
            progress.show(summary, image)
    return summary, False


def migrate_keys(settings: Settings, store: ObjectStore, dry_run: bool) -> int:
    """Move flat-layout objects to the partitioned layout; how many moved."""
    head = settings.storage_key_prefix + "/"
    moved, images, after = 0, set(), ""
    while page := store.keys(head, start_after=after, limit=1000):
        for key in page:
            after = key
            output = parse_flat_object_key(settings, key)
            if output is None:
                continue
            content_type = CONTENT_TYPES[parse_output(output.name).format]
            moved += _move(store, key, output.object_key(settings), content_type, dry_run)
            images.add(dataclasses.replace(output.image, source_tag=None))
    for image in sorted(images, key=lambda image: (image.kind, image.id)):
        url = jobs.default_source_url(settings, image)  # the flat layout kept it by URL
        old = explicit_original_key(settings, url)
        if store.exists(old):
            new = image.original_key(settings, url)
            moved += _move(store, old, new, "application/octet-stream", dry_run)
    return moved


def _move(store: ObjectStore, old: str, new: str, content_type: str, dry_run: bool) -> int:
    print(f"{old} -> {new}")
    if dry_run:
        return 1
    data = store.get(old)
    if data is None:
        return 0  # gone meanwhile
    store.put(new, data, content_type)
    store.delete(old)
    return 1


def regenerate_main(argv: list[str] | None = None, prog: str | None = None) -> None:
    """`image-server regenerate`: exit status 0 only when every output was queued."""
    parser = program.argument_parser("Queue outputs of the originals in object storage", prog)
    parser.add_argument("--prefix", required=True, help="<model> or <model>/<imageType>")
    parser.add_argument("--outputs", required=True, help="x300.jpg,w500.webp,...")
    parser.add_argument("--replace", action="store_true", help="remake outputs already stored")
    parser.add_argument(
        "--rate", type=program.positive(float), default=50.0, help="jobs queued per second, at most"
    )
    parser.add_argument(
        "--page", type=program.positive(int), default=1000, help="keys listed per request"
    )
    parser.add_argument(
        "--cursor", type=Path, default=REPO_ROOT / "var" / "regenerate.cursor", help="resume file"
    )
    args = parser.parse_args(argv)
    settings = program.load_settings(args, announce=True)
    try:  # checked before anything is reached
        outputs = output_names(settings, args.outputs)
    except ValueError as exc:
        parser.error(str(exc))
    store = open_store(settings)
    stop = program.stop_event_on_signals()
    connection = amqp.blocking_connection(settings)
    try:
        channel = connection.channel()
        amqp.declare(channel, amqp.resize_queues(settings))
        channel.confirm_delivery()
        summary, done = regenerate(settings, store, channel, args, outputs, stop)
    finally:
        connection.close()
    if sys.stderr.isatty():
        sys.stderr.write("\n")  # after the progress line
    if not done:
        sys.exit(f"interrupted: {summary.line()}; run the same command again to continue")
    if summary.failed:
        sys.exit(
            f"done, but RabbitMQ refused {summary.failed} job(s): {summary.line()}; "
            "run the same command again to queue them (stored outputs are skipped)"
        )
    print(f"done: {summary.line()}")


def migrate_keys_main(argv: list[str] | None = None, prog: str | None = None) -> None:
    """`image-server migrate-keys`."""
    parser = program.argument_parser("Move flat object keys to the partitioned layout", prog)
    parser.add_argument("--dry-run", action="store_true", help="print the moves, do nothing")
    args = parser.parse_args(argv)
    settings = program.load_settings(args, announce=True)
    print(f"moved {migrate_keys(settings, open_store(settings), args.dry_run)} objects")


if __name__ == "__main__":
    sys.exit("use: image-server regenerate ... or image-server migrate-keys ...")
