"""Settings as the tests make them, one way: the test config (config/test.json)
with the test's keys over it; and the keys of an output under those settings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from common import config, keys
from common.settings import Settings
from tests.support import REPO
from tests.support.ports import free_port


def base_config() -> dict[str, Any]:
    """config/test.json, the keys every test starts from."""
    loaded: dict[str, Any] = json.loads((REPO / "config" / "test.json").read_text())
    return loaded


def host_keys(workdir: Path, source_domain: str) -> dict[str, Any]:
    """The keys that make a test's host its own: its ports, its directories under
    `workdir`, its origin."""
    return {
        "server_port": free_port(),
        "status_port": free_port(),
        "uploader_health_port": free_port(),
        "source_domain": source_domain,
        "local_base_path": str(workdir / "cache"),
        "originals_path": str(workdir / "originals"),
        "storage_path": str(workdir / "storage"),
        "spill_path": str(workdir / "spill"),
        "metrics_path": str(workdir / "metrics"),
        "access_log_path": str(workdir),
    }


def configured(**overrides: Any) -> Settings:
    """The test config with `overrides` over it, checked as a program checks it."""
    return config.from_mapping({**base_config(), **overrides})


def object_key_of(settings: Settings, cache_key: str) -> str:
    """The object key of the output whose cache key is `cache_key`."""
    return keys.OutputRef.from_cache_key(cache_key).object_key(settings)


def original_key_of(settings: Settings, cache_key: str, source_url: str) -> str:
    """Where the original of the output `cache_key` (fetched from `source_url`) is kept."""
    return keys.OutputRef.from_cache_key(cache_key).image.original_key(settings, source_url)
