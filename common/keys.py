"""The key layout: where every file and object of an image lives.

An image is an `ImageRef`, one of its outputs an `OutputRef`; the original
fetched from a URL is known by that URL. These derive every path and key,
and parse an object key back; no other module joins or splits them. Object
storage keeps this layout across every deploy: change it only with a
migration (`image-server migrate-keys`).

    cache key (an output's relative path in the local cache; its name in messages):
        <model>/<imageType>/<id>[/src-<tag>]/<output>
    object keys, under <storage_key_prefix>/:
        <model>/<imageType>/<partition>/<id>[/src-<tag>]/<output>
        <model>/<imageType>/<partition>/<id>/original
        .originals/<sha256 of the source= URL>
        .purged/<model>/<imageType>/<id>  (when the image was last purged: common/purge.py)
    on each host:
        <local_base_path>/<model>/<imageType>/<partition>/<id>.[src-<tag>.]<output>
        <originals_path>/<sha[:2]>/<sha256 of the original's URL>
        <originals_path>/masters/<sha[:2]>/<sha256 of the URL>-2.v

`partition` is the first 3 hex digits of the SHA-256 of the image id (it
spreads one type's images over 4096 prefixes); `tag` the first 24 of the
SHA-256 of an explicit `source=` URL (another original, other outputs).
The disk cache keeps an image's outputs as files of its partition's
directory, not in a directory of the image (nginx's proxy_cache does the
same): a directory costs a block of the disk and of the kernel's memory
(4 GB at a million images), which the cache's budget does not count and
whose absence makes a removal read the disk (bench/SCALE.md). Segments
never hold a dot, so the first dot of a file's name ends the id.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from pathlib import Path
from typing import Protocol

ORIGINAL_NAME = "original"  # no dot: never an output's name
# Originals of explicit `source=` URLs: a name no model of the URL grammar can
# take (segments never hold a dot).
ORIGINALS_DIR = ".originals"
PURGE_MARKS_DIR = ".purged"
PARTITION_CHARS = 3
PARTITIONS = 16**PARTITION_CHARS
SOURCE_TAG_CHARS = 24
_SOURCE_PREFIX = "src-"
_SOURCE_PART = re.compile(rf"{_SOURCE_PREFIX}[0-9a-f]{{{SOURCE_TAG_CHARS}}}")
_ORIGINAL_FILE = re.compile(r"([0-9a-f]{2})/\1[0-9a-f]{62}")
_MASTER_FILE = re.compile(r"([0-9a-f]{2})/\1[0-9a-f]{62}(?:-2)?\.v")  # older masters too


class KeyLayout(Protocol):
    """What the layout depends on: three settings (common.settings.Settings has
    them; a test can pass any value that has them)."""

    @property
    def storage_key_prefix(self) -> str: ...
    @property
    def cache_dir(self) -> Path: ...
    @property
    def originals_dir(self) -> Path: ...


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def partition(image_id: str) -> str:
    return sha256_hex(image_id)[:PARTITION_CHARS]


@dataclasses.dataclass(frozen=True)
class ImageRef:
    """One image: its outputs share a cache directory, an object prefix and an
    original. `source_tag` names the original of an explicit `source=` URL."""

    model: str
    image_type: str
    id: str
    source_tag: str | None = None

    @classmethod
    def of(cls, model: str, image_type: str, image_id: str, source: str | None) -> ImageRef:
        """The image of a request (its `source=` URL, if any)."""
        tag = None if source is None else sha256_hex(source)[:SOURCE_TAG_CHARS]
        return cls(model, image_type, image_id, tag)

    @property
    def kind(self) -> str:
        """`<model>/<imageType>`: what popularity counts, a CDN's second surrogate key."""
        return f"{self.model}/{self.image_type}"

    @property
    def source_part(self) -> str:
        """The directory of an explicit source's outputs under the image's, or ""."""
        return "" if self.source_tag is None else f"{_SOURCE_PREFIX}{self.source_tag}/"

    def object_prefix(self, layout: KeyLayout) -> str:
        """The prefix of every object of the image (all its sources), ending with "/"."""
        return f"{layout.storage_key_prefix}/{self.kind}/{partition(self.id)}/{self.id}/"

    def partition_dir_under(self, cache_dir: Path) -> Path:
        """The local cache's directory of the image's outputs, shared with the
        other images of its partition (about ids / 4096 of its type)."""
        return cache_dir / self.model / self.image_type / partition(self.id)

    @property
    def cached_name_prefix(self) -> str:
        """How the names of the image's cached outputs (all its sources) begin,
        under local_base_path."""
        return f"{self.kind}/{partition(self.id)}/{self.id}."

    def cached_outputs_under(self, cache_dir: Path) -> list[Path]:
        """The files of the image's outputs in the local cache (all its sources)."""
        directory = self.partition_dir_under(cache_dir)
        try:
            names = os.listdir(directory)
        except FileNotFoundError:
            return []
        return [directory / name for name in names if name.startswith(f"{self.id}.")]

    def original_key(self, layout: KeyLayout, source_url: str) -> str:
        """Where the image's original (fetched from `source_url`) is kept."""
        if self.source_tag is not None:
            return explicit_original_key(layout, source_url)
        return self.object_prefix(layout) + ORIGINAL_NAME

    def purge_mark_key(self, layout: KeyLayout) -> str:
        """Where the time of the image's last purge is kept (all its sources)."""
        return f"{layout.storage_key_prefix}/{PURGE_MARKS_DIR}/{self.kind}/{self.id}"

    def output(self, name: str) -> OutputRef:
        return OutputRef(self, name)


@dataclasses.dataclass(frozen=True)
class OutputRef:
    image: ImageRef
    name: str  # the canonical output name: w500.jpg

    @classmethod
    def from_cache_key(cls, cache_key: str) -> OutputRef:
        """The output a cache key names (the inverse of `cache_key`)."""
        model, image_type, image_id, rest = cache_key.split("/", 3)
        tag, _, name = rest.rpartition("/")
        source_tag = tag.removeprefix(_SOURCE_PREFIX) if tag else None
        return cls(ImageRef(model, image_type, image_id, source_tag), name)

    @property
    def cache_key(self) -> str:
        image = self.image
        return f"{image.kind}/{image.id}/{image.source_part}{self.name}"

    def object_key(self, layout: KeyLayout) -> str:
        return self.image.object_prefix(layout) + self.image.source_part + self.name

    def cache_path(self, layout: KeyLayout) -> Path:
        """Where this host's disk cache keeps the output."""
        return self.path_under(layout.cache_dir)

    def path_under(self, cache_dir: Path) -> Path:
        image = self.image
        source = "" if image.source_tag is None else f"{_SOURCE_PREFIX}{image.source_tag}."
        return image.partition_dir_under(cache_dir) / f"{image.id}.{source}{self.name}"


def cached_output(relative: str) -> OutputRef | None:
    """The output whose cache path, under local_base_path, is `relative`; None
    for a path this layout never makes (whether its names are in the URL
    grammar is common.urls' to say)."""
    parts = relative.split("/")
    if len(parts) != 4:
        return None
    model, image_type, part, file_name = parts
    image_id, _, name = file_name.partition(".")
    if part != partition(image_id) or not name:
        return None
    tag = None
    if name.startswith(_SOURCE_PREFIX):
        tagged, _, name = name.partition(".")
        if not _SOURCE_PART.fullmatch(tagged) or not name:
            return None
        tag = tagged.removeprefix(_SOURCE_PREFIX)
    return OutputRef(ImageRef(model, image_type, image_id, tag), name)


def is_source_dir(name: str) -> bool:
    """Whether `name`, under an image's directory of an earlier layout, held an
    explicit source's outputs."""
    return _SOURCE_PART.fullmatch(name) is not None


def is_kept_original(relative: str) -> bool:
    """Whether `relative`, under originals_path, is where an original is kept."""
    return _ORIGINAL_FILE.fullmatch(relative) is not None


def is_master(relative: str) -> bool:
    """Whether `relative`, under the masters' directory, is where a master is kept."""
    return _MASTER_FILE.fullmatch(relative) is not None


def parse_object_key(layout: KeyLayout, key: str) -> tuple[ImageRef, str] | None:
    """An object key of the partitioned layout, back into its image and the rest
    (an output's name, `src-<tag>/<name>`, or `original`); None for any other key
    (an explicit source's original, or a key of another layout)."""
    head = layout.storage_key_prefix + "/"
    if not key.startswith(head):
        return None
    parts = key[len(head) :].split("/", 4)
    if len(parts) != 5 or parts[2] != partition(parts[3]):
        return None
    model, image_type, _, image_id, rest = parts
    return ImageRef(model, image_type, image_id), rest


def parse_flat_object_key(layout: KeyLayout, key: str) -> OutputRef | None:
    """An output's object key in the flat layout of earlier versions (no partition:
    `<prefix>/<model>/<imageType>/<id>[/src-<tag>]/<output>`), or None."""
    head = layout.storage_key_prefix + "/"
    if not key.startswith(head):
        return None
    parts = key[len(head) :].split("/")
    flat_output = len(parts) == 4 and "." in parts[3] and not parts[0].startswith(".")
    flat_source = len(parts) == 5 and parts[3].startswith(_SOURCE_PREFIX)
    if not (flat_output or flat_source) or parts[2] == partition(parts[3]):
        return None
    return OutputRef.from_cache_key("/".join(parts))


def probe_key(layout: KeyLayout) -> str:
    """An empty object written to learn whether object storage takes writes at all."""
    return f"{layout.storage_key_prefix}/.probe"


def explicit_original_key(layout: KeyLayout, source_url: str) -> str:
    """The original fetched from a `source=` URL."""
    return f"{layout.storage_key_prefix}/{ORIGINALS_DIR}/{sha256_hex(source_url)}"


def original_path(layout: KeyLayout, source_url: str) -> Path:
    """Where this host keeps the original fetched from `source_url`."""
    digest = sha256_hex(source_url)
    return layout.originals_dir / digest[:2] / digest


def masters_dir(layout: KeyLayout) -> Path:
    return layout.originals_dir / "masters"


def master_path(layout: KeyLayout, source_url: str) -> Path:
    digest = sha256_hex(source_url)
    # "-2": masters that remember their original's size (older ones are ignored).
    return masters_dir(layout) / digest[:2] / f"{digest}-2.v"
