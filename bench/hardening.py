"""The hardening's third pass, measured on real programs (bench/HARDENING.md).

A stack as the tests start it (tests/support/stack.py: two frontends, two processors, a
real RabbitMQ and a real origin), with the production defences a client meets:
the miss budget, X-Forwarded-For believed from loopback so that each simulated
client has an address, and the source breaker at its defaults.

1. The scan bomb (7000x7000, 2,648 scans): four at once from one client while
   another makes 20 ordinary misses.
2. The breaker attack: one client's `source=` URLs on a dead port of the origin's
   host and on failing paths of the origin itself, then another client's misses.
3. Sixteen clients that read nothing of a fresh 8.5 MB output: the frontends' growth.

    python -m bench.hardening      # about a minute
"""

from __future__ import annotations

import concurrent.futures
import tempfile
import time
from pathlib import Path

import urllib3

from testkit.jpeg_bomb import scan_bomb
from tests.frontend.test_big_outputs import noise_png, non_reading_clients
from tests.support.images import photo
from tests.support.origin import Origin
from tests.support.ports import free_port
from tests.support.rabbitmq import Vhost
from tests.support.stack import Stack

BENCH = Path(__file__).resolve().parent
DEFENCES = {
    "trusted_proxies": ["127.0.0.0/8"],
    "client_miss_rate_per_s": 1.0,
    "client_miss_burst": 50,
    "source_failures_to_open": 5,
}


def get(stack: Stack, path: str, client: str, **fields: str) -> int:
    headers = {"X-Forwarded-For": client}
    return stack.get(path, headers=headers, fields=fields or None, timeout=60).status


def cpu_s(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime + stime, in clock ticks
    return total / 100


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def scan_bombs(stack: Stack, origin: Origin) -> list[str]:
    bomb = scan_bomb(7000)
    for index in range(4):
        origin.add(f"bomb/img/{index}/original.jpg", bomb)
    for index in range(20):
        origin.add(f"plain/img/{index}/original.jpg", photo())
    processors = [stack.processes[f"processor_{i}"].pid for i in range(2)]
    before = cpu_s(processors)
    with concurrent.futures.ThreadPoolExecutor(5) as pool:
        started = time.perf_counter()
        bombs = [pool.submit(get, stack, f"/bomb/img/{i}/w500.jpg", "192.0.2.1") for i in range(4)]

        def ordinary() -> list[int]:
            return [get(stack, f"/plain/img/{i}/w500.jpg", "192.0.2.2") for i in range(20)]

        plain = pool.submit(ordinary).result()
        statuses = [future.result() for future in bombs]
        took_s = time.perf_counter() - started
    spent_s = cpu_s(processors) - before
    return [
        f"| scan bomb (7000x7000, {len(bomb) // 1024} KB, 2,648 scans), 4 at once | "
        f"{statuses} | processors' CPU for all of it {spent_s:.2f} s (bombs and 20 misses), "
        f"{took_s:.1f} s in all |",
        f"| another client's 20 ordinary misses meanwhile | {plain.count(200)} of 20: 200 | |",
    ]


def breaker_attack(stack: Stack, origin: Origin) -> list[str]:
    dead = f"http://127.0.0.1:{free_port()}"
    for index in range(10):  # a port nothing listens on (allowed by allowed_source_ports)
        get(stack, f"/att/img/{index}/w100.jpg", "192.0.2.3", source=f"{dead}/nope{index}.jpg")
    for index in range(10):  # failing paths of the origin itself (503)
        failing = origin.add(f"att/down/{index}.jpg", b"down", status=503)
        get(stack, f"/att/img/{index}/w200.jpg", "192.0.2.3", source=failing)
    statuses = []
    for index in range(29):
        origin.add(f"legit/img/{index}/original.jpg", photo())
        statuses.append(get(stack, f"/legit/img/{index}/w100.jpg", "192.0.2.4"))
    refused = len(statuses) - statuses.count(200)
    return [f"| breaker attack, then 29 new-image misses of another client | {refused} refused | |"]


def slow_readers(stack: Stack, origin: Origin) -> list[str]:
    origin.add("big/img/1/original.jpg", noise_png(1700), content_type="image/png")
    frontends = [stack.processes[f"frontend_{i}"].pid for i in range(2)]
    before = sum(rss_mib(pid) for pid in frontends)
    clients = non_reading_clients(stack, "/big/img/1/full_size.png", 16)
    grown = sum(rss_mib(pid) for pid in frontends) - before
    for client in clients:
        client.close()
    scenario = "16 clients reading nothing of a fresh 8.5 MB output"
    return [f"| {scenario} | frontends grew {grown:.1f} MiB (VmRSS) | |"]


def main() -> None:
    origin, vhost = Origin(), Vhost()
    with tempfile.TemporaryDirectory() as work:
        stack = Stack(Path(work), vhost, origin, frontends=2, **DEFENCES)
        try:
            stack.start(processors=2)
            rows = [*scan_bombs(stack, origin), *breaker_attack(stack, origin)]
            rows += slow_readers(stack, origin)
        finally:
            stack.stop()
            vhost.delete()
            origin.stop()
    table = "\n".join(["| scenario | outcome | cost |", "|---|---|---|", *rows])
    print(table)
    head = (BENCH / "HARDENING.md").read_text().split("<!-- table -->")[0]
    (BENCH / "HARDENING.md").write_text(f"{head}<!-- table -->\n{table}\n")


if __name__ == "__main__":
    urllib3.disable_warnings()
    main()
