"""Who a request comes from, and the budget of resizes shared by a host's frontends."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from frontend.clients import MissBudget, client_address, trusted_networks

PROXIES = trusted_networks(["10.0.0.0/8", "127.0.0.1/32"])


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "client"),
    [
        ("203.0.113.5", None, "203.0.113.5"),
        ("203.0.113.5", "198.51.100.1", "203.0.113.5"),  # peer not a proxy: header ignored
        ("10.1.2.3", "198.51.100.1", "198.51.100.1"),
        ("10.1.2.3", "1.2.3.4, 198.51.100.1, 10.9.9.9", "198.51.100.1"),  # made-up left part
        ("10.1.2.3", "made-up, 198.51.100.1", "198.51.100.1"),
        ("10.1.2.3", "10.0.0.1", "10.0.0.1"),  # only proxies: the first one
        ("10.1.2.3", None, "10.1.2.3"),
        ("2001:db8:1:2:3:4:5:6", None, "2001:db8:1:2::/64"),  # one IPv6 host, one /64
        ("::ffff:203.0.113.5", None, "203.0.113.5"),
    ],
)
def test_client_address(peer: str, forwarded_for: str | None, client: str) -> None:
    assert client_address(peer, forwarded_for, PROXIES) == client


def test_without_trusted_proxies_the_header_is_ignored() -> None:
    assert client_address("127.0.0.1", "198.51.100.1", []) == "127.0.0.1"


def test_a_bucket_refills_at_its_rate(tmp_path: Path) -> None:
    budget = MissBudget(tmp_path / "budgets", rate_per_s=0.5, burst=2)
    assert [budget.take("a"), budget.take("a")] == [0.0, 0.0]
    wait_s = budget.take("a")
    assert 1.9 < wait_s <= 2.0  # one token at 0.5/s
    assert budget.take("b") == 0.0


def _spend(path: Path, count: int, granted: multiprocessing.Queue[int]) -> None:
    budget = MissBudget(path, rate_per_s=0.001, burst=50)
    granted.put(sum(1 for _ in range(count) if budget.take("shared-client") == 0.0))


def test_processes_share_one_budget(tmp_path: Path) -> None:
    """Four processes (as four frontends) spending one client's budget at once
    are granted exactly its burst between them."""
    granted: multiprocessing.Queue[int] = multiprocessing.Queue()
    workers = [
        multiprocessing.Process(target=_spend, args=(tmp_path / "budgets", 40, granted))
        for _ in range(4)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    assert sum(granted.get(timeout=5) for _ in workers) == 50


def test_a_costly_resize_is_charged_as_several_misses(tmp_path: Path) -> None:
    budget = MissBudget(tmp_path / "budgets", rate_per_s=1.0, burst=5)
    assert budget.take("a") == 0.0
    budget.charge("a", 7.0)  # 8 spent of 5: in debt
    wait_s = budget.take("a")
    assert 3.9 < wait_s <= 4.0  # 8 + 1 - 5 at 1/s
    assert budget.take("b") == 0.0
