"""Downloads have one deadline for all of it, and one source host a bounded share."""

from __future__ import annotations

import threading
import time

import pytest

from common.errors import SourceBusy, SourceTimeout
from processor.fetch import SourceFetcher
from tests.processor.test_fetch import settings_for
from tests.support.images import photo
from tests.support.origin import Origin


def test_a_trickling_source_is_cut_off_at_the_download_deadline(origin: Origin) -> None:
    # One byte every 50 ms is well within the between-bytes timeout (5 s), so
    # only a deadline for the whole download can stop it before its ~1000 s end.
    url = origin.add("downloads/trickle.jpg", photo()[:20_000], trickle_interval_s=0.05)
    fetcher = SourceFetcher(settings_for(origin, source_download_timeout_s=1.0))
    started = time.monotonic()
    with pytest.raises(SourceTimeout):
        fetcher.fetch(url)
    assert_cut_off_by_the_deadline(origin, "downloads/trickle.jpg", time.monotonic() - started)


def assert_cut_off_by_the_deadline(origin: Origin, path: str, elapsed_s: float) -> None:
    """Bytes were flowing, for the whole 1 s deadline (not an instant SourceTimeout),
    and the deadline ended it, not the trickle's own ~1000 s end."""
    assert origin.started[path].is_set()
    assert 0.9 <= elapsed_s < 30, elapsed_s


def test_the_callers_deadline_wins_when_it_is_sooner(origin: Origin) -> None:
    url = origin.add("downloads/trickle-2.jpg", photo()[:20_000], trickle_interval_s=0.05)
    fetcher = SourceFetcher(settings_for(origin, source_download_timeout_s=600.0))
    started = time.monotonic()
    with pytest.raises(SourceTimeout):
        fetcher.fetch(url, deadline=started + 1.0)
    assert_cut_off_by_the_deadline(origin, "downloads/trickle-2.jpg", time.monotonic() - started)


def test_one_host_gets_a_bounded_number_of_downloads_at_once(origin: Origin) -> None:
    slow = origin.add("downloads/slow.jpg", photo()[:20_000], trickle_interval_s=0.05)
    fast = origin.add("downloads/fast.jpg", photo())
    # The slow download holds the host's one slot until its deadline: long
    # enough that a stalled moment of this shared machine cannot end it first.
    fetcher = SourceFetcher(
        settings_for(origin, max_downloads_per_source_host=1, source_download_timeout_s=5.0)
    )
    outcome: list[BaseException] = []

    def slow_download() -> None:
        try:
            fetcher.fetch(slow)
        except Exception as exc:  # shown by the assertions below, whatever it is
            outcome.append(exc)

    thread = threading.Thread(target=slow_download)
    thread.start()
    assert origin.started["downloads/slow.jpg"].wait(10), outcome
    with pytest.raises(SourceBusy):
        fetcher.fetch(fast)
    thread.join(30)
    assert [type(exc) for exc in outcome] == [SourceTimeout], outcome
    # The slot is free again once the slow download has given up.
    assert fetcher.fetch(fast) == photo()
