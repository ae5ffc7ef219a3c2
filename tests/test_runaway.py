"""A decode that cannot be stopped is not waited for (hardening, third pass), end to end.

The scan bound refuses the known bomb before its decode (tests/processor/
test_scan_bomb.py); here the bound is lifted, so the bomb stands for any work
in a codec that ignores the deadline.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from processor.worker import RUNAWAY_EXIT_CODE
from testkit.jpeg_bomb import scan_bomb
from tests.support.origin import Origin
from tests.support.stack import Stack
from tests.support.waiting import wait_until

# About 5 s of decode for libjpeg-turbo (4000x4000, 2,648 scans): past each deadline below.
_BOMB_SIDE = 4000
_NO_SCAN_BOUND = 1_000_000


def job_lines(stack: Stack, name: str) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in stack.log(name).splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("event") == "job"]


def test_a_runaway_decode_is_answered_then_its_processor_restarts(
    make_stack: Callable[..., Stack], origin: Origin
) -> None:
    stack = make_stack(job_timeout_s=0.3, max_source_jpeg_scans=_NO_SCAN_BOUND).start(processors=1)
    origin.add("bomb/img/1/original.jpg", scan_bomb(_BOMB_SIDE))
    answer = stack.get("/bomb/img/1/w100.jpg")
    assert answer.status == 504
    assert b"job_timeout_s" in answer.data  # the processor's RenderTooSlow, not a wait
    processor = stack.processes["processor_0"]
    # Stopped, not waited for: the processor exits (supervisord starts it again).
    wait_until(lambda: processor.poll() is not None, 10, "the processor restarting")
    assert processor.returncode == RUNAWAY_EXIT_CODE
    assert [line["outcome"] for line in job_lines(stack, "processor_0")] == ["RenderTooSlow"]
    # Remembered as a failure: asked again, no processor is needed to answer it.
    again = stack.get("/bomb/img/1/w100.jpg")
    assert again.status == 504 and b"job_timeout_s" in again.data


def test_a_client_pays_for_the_resizes_it_gave_up_on(
    make_stack: Callable[..., Stack], origin: Origin
) -> None:
    """The frontend stops waiting at resize_deadline_s; the processor's answer
    that comes later still charges the client for its processor time."""
    stack = make_stack(
        resize_deadline_s=1.0,
        max_source_jpeg_scans=_NO_SCAN_BOUND,
        client_miss_rate_per_s=0.01,
        client_miss_burst=4,
    ).start(processors=1)
    origin.add("bomb/img/2/original.jpg", scan_bomb(_BOMB_SIDE))
    assert stack.get("/bomb/img/2/w100.jpg").status == 504  # gave up at 1 s
    wait_until(lambda: "late result" in stack.log("frontend_0"), 10, "the late answer")
    # About 2 s of resize is 8 misses of 0.25 s: past the burst of 4 (uncharged,
    # one miss of 4 would have been spent).
    assert stack.get("/bomb/img/3/w100.jpg").status == 429
