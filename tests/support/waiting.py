"""Waiting for a condition, with a bound and a name for the failure."""

from __future__ import annotations

import time
from typing import Any


def wait_until(condition: Any, timeout_s: float = 15.0, what: str = "condition") -> None:
    give_up = time.monotonic() + timeout_s
    while time.monotonic() < give_up:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
