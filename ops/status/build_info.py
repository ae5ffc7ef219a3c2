"""What runs on this host: the version, the commit, libvips, the environment, and
the settings that change what clients get (for the status page and /metrics)."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import subprocess

from common.settings import REPO_ROOT, Settings
from processor import imaging


@dataclasses.dataclass(frozen=True)
class Build:
    version: str
    commit: str  # "unknown" outside a git checkout
    libvips: str
    environment: str
    # The settings an operator asks about first during an incident.
    behaviour: dict[str, str]


def current(settings: Settings, environment: str) -> Build:
    return Build(
        version=_version(),
        commit=commit(),
        libvips=imaging.libvips_version(),
        environment=environment,
        behaviour={
            "signing": "on" if settings.signing_keys else "off",
            "allowed_outputs": str(len(settings.allowed_outputs)) + " patterns"
            if settings.allowed_outputs
            else "any",
            "auto_formats": ", ".join(settings.auto_formats) or "off",
            "storage": settings.storage_backend,
            "masters": "on" if settings.masters_enabled else "off",
        },
    )


def _version() -> str:
    try:
        return importlib.metadata.version("image-server")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def commit() -> str:
    """The checkout's commit; in a container image (no git), the one it was built from
    (the file COMMIT the Containerfile writes)."""
    try:
        found = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if found.returncode == 0:
            return found.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    built_from = REPO_ROOT / "COMMIT"
    return built_from.read_text().strip() if built_from.exists() else "unknown"
