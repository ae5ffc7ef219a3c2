"""Where each host keeps the files of one image: its outputs, its original, its master.

In one place because two programs need it: processors write originals and
masters, the frontend writes outputs, and a purge (common/purge.py) removes
all three.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from common.config import Settings


def _digest(source_url: str) -> str:
    return hashlib.sha256(source_url.encode()).hexdigest()


def original_path(settings: Settings, source_url: str) -> Path:
    digest = _digest(source_url)
    return settings.originals_dir / digest[:2] / digest


def masters_dir(settings: Settings) -> Path:
    return settings.originals_dir / "masters"


def master_path(settings: Settings, source_url: str) -> Path:
    digest = _digest(source_url)
    # "-2": masters that remember their original's size (older ones are ignored).
    return masters_dir(settings) / digest[:2] / f"{digest}-2.v"


def image_outputs_dir(settings: Settings, model: str, image_type: str, image_id: str) -> Path:
    """The local cache directory of every output of one image (`source=` ones included)."""
    return settings.cache_dir / model / image_type / image_id
