"""No client can pause a source for others (hardening, third pass): a real fetcher
against a real origin, and a port where nothing listens."""

from __future__ import annotations

import pytest

from common.errors import SourceHostPaused, SourceUnavailable
from processor.fetch import SourceFetcher
from tests.processor.test_fetch import settings_for
from tests.support.images import photo
from tests.support.origin import Origin
from tests.support.ports import free_port


def test_failures_on_another_port_of_the_origins_host_do_not_pause_it(origin: Origin) -> None:
    """`source=http://<origin host>:<dead port>/...` opened the origin's breaker
    (it counted by host name): the breaker keys on scheme, host and port."""
    dead = free_port()
    settings = settings_for(
        origin, source_failures_to_open=3, source_pause_s=60.0, allowed_source_ports=[dead]
    )
    fetcher = SourceFetcher(settings)
    for index in range(5):
        with pytest.raises((SourceUnavailable, SourceHostPaused)):
            fetcher.fetch(f"http://127.0.0.1:{dead}/nope{index}.jpg", explicit=True)
    with pytest.raises(SourceHostPaused):  # that origin is paused...
        fetcher.fetch(f"http://127.0.0.1:{dead}/nope.jpg", explicit=True)
    url = origin.add("breakers/1/original.jpg", photo())
    assert fetcher.fetch(url) == photo()  # ...the configured one is not


def test_a_clients_source_urls_cannot_pause_the_configured_origin(origin: Origin) -> None:
    """Failures of the configured origin's own host and port, asked through
    `source=`, pause only `source=` downloads from it."""
    settings = settings_for(origin, source_failures_to_open=3, source_pause_s=60.0)
    fetcher = SourceFetcher(settings)
    failing = [origin.add(f"breakers/down/{i}.jpg", b"down", status=503) for i in range(4)]
    for url in failing:
        with pytest.raises((SourceUnavailable, SourceHostPaused)):
            fetcher.fetch(url, explicit=True)
    with pytest.raises(SourceHostPaused):
        fetcher.fetch(origin.add("breakers/2/original.jpg", photo()), explicit=True)
    assert fetcher.fetch(origin.url("breakers/2/original.jpg")) == photo()
    # The configured origin's own failures still pause it (the breaker works).
    for url in failing:
        with pytest.raises((SourceUnavailable, SourceHostPaused)):
            fetcher.fetch(url)
    with pytest.raises(SourceHostPaused):
        fetcher.fetch(origin.url("breakers/2/original.jpg"))
