"""The host's status server: its page in a real browser, /metrics, /health.

The page is loaded in Debian's headless Chromium (installed by `make test`):
the figures it shows must be those of a scripted burst, its charts drawn;
the screenshot is kept in var/test-artifacts/.
"""

from __future__ import annotations

import http.client
import io
import re
import signal
import subprocess
from collections.abc import Callable

import numpy
from PIL import Image

from tests.support import REPO
from tests.support.images import photo
from tests.support.origin import Origin
from tests.support.s3 import S3Server
from tests.support.stack import Stack
from tests.support.waiting import wait_until

ARTIFACTS = REPO / "var" / "test-artifacts"
CHROMIUM = "chromium-headless-shell"
REQUESTS_BLUE = (0x1F, 0x77, 0xB4)  # the requests chart's stroke (ops/status/page.py, _COLOURS)


def fresh_connection_get(stack: Stack, path: str) -> int:
    """GET on a new connection, so the kernel spreads requests over the frontends."""
    connection = http.client.HTTPConnection("127.0.0.1", stack.config["server_port"], timeout=30)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def chromium(*args: str) -> bytes:
    command = [CHROMIUM, "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *args]
    done = subprocess.run(command, capture_output=True, timeout=60, check=True)
    return done.stdout


def shown(dom: str, figure: str) -> str:
    match = re.search(rf'data-figure="{re.escape(figure)}">([^<]*)<', dom)
    assert match is not None, f"{figure} is not on the page"
    return match.group(1).replace(",", "")


def test_the_status_page_in_chromium_shows_the_burst(
    make_stack: Callable[..., Stack], origin: Origin
) -> None:
    stack = make_stack(frontends=2, janitor_interval_s=0.2)
    stack.start(processors=2, uploader=True, status=True)
    stack.spawn("janitor", "ops.janitor")
    images = 6
    for index in range(images):
        origin.add(f"page/img/{index}/original.jpg", photo())
    statuses = []
    for _ in range(5):  # each image: one miss, then four hits
        for index in range(images):
            statuses.append(fresh_connection_get(stack, f"/page/img/{index}/w200.jpg"))
        stack.status_json()  # waits for a new sample: the charts get points over time
    assert statuses == [200] * 30
    wait_until(
        # The outputs (processors store new originals themselves).
        lambda: stack.status_json()["uploads"]["stored"] == images,
        what="the uploads to be stored",
    )
    dom = chromium("--dump-dom", f"{stack.status_url}/").decode()
    assert shown(dom, "health") == "ok"
    assert shown(dom, "requests.total") == "30"
    assert shown(dom, "requests.cache_misses") == "6"
    assert shown(dom, "requests.cache_hits") == "24"
    assert shown(dom, "requests.hit_ratio") == "80.0"
    assert shown(dom, "requests.by_status_class.2xx") == "30"
    assert shown(dom, "resizes.done") == "6"
    assert shown(dom, "resizes.originals_downloaded") == "6"
    assert "environment <b>test</b>" in dom and "storage: <b>filesystem</b>" in dom
    assert shown(dom, "uploads.stored") == "6"
    assert shown(dom, "queues.image.resize.consumers") == "2"
    assert shown(dom, "queues.image.upload.consumers") == "1"
    # Unacked messages and rates, from the management API (a number, not "–").
    assert shown(dom, "queues.image.resize.unacked").isdigit()
    assert float(shown(dom, "queues.image.resize.in_per_s")) >= 0
    assert 'data-figure="queue_stats_problem"' not in dom
    assert float(shown(dom, "requests.latency_last_5_min.p99_ms")) > 0
    assert dom.count("<td>serving</td>") == 5  # 2 frontends, 2 processors, the uploader
    # The outputs row itself (cache, used, budget, files), not a later row's 6.
    outputs_row = re.search(r"<tr><th>outputs</th><td>[^<]+</td><td>[^<]+</td><td>6</td><td>", dom)
    assert outputs_row is not None, "the janitor's figures (6 outputs on disk) are not shown"
    assert shown(dom, "disk.outputs.evicted_files") == "0"  # all within budget
    # Both charts are drawn from several samples.
    for series in ("requests_per_s", "p50_ms", "p95_ms", "p99_ms"):
        points = re.search(rf'data-series="{series}" points="([^"]+)"', dom)
        assert points is not None and len(points.group(1).split()) >= 3, series

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    screenshot = ARTIFACTS / "status-page.png"
    screenshot.unlink(missing_ok=True)
    chromium(f"--screenshot={screenshot}", "--window-size=1280,1100", f"{stack.status_url}/")
    pixels = numpy.asarray(Image.open(io.BytesIO(screenshot.read_bytes())).convert("RGB"))
    blue = numpy.all(numpy.abs(pixels.astype(int) - REQUESTS_BLUE) <= 24, axis=-1)
    # The line crosses the chart (about 480 px wide); the legend alone covers ~64 columns.
    columns = int(numpy.any(blue, axis=0).sum())
    assert columns > 300, f"the requests chart's line is not on the screenshot ({columns} columns)"


def host_counter(stack: Stack, name: str, **labels: str) -> float:
    """A counter of /metrics summed over the series whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(
        value
        for (sample, sample_labels), value in stack.metrics().items()
        if sample == name and wanted <= sample_labels
    )


MEMORY = "image_server_process_resident_memory_bytes"
CPU = "image_server_process_cpu_seconds_total"


def test_metrics_add_up_over_processes_and_survive_a_restart(
    make_stack: Callable[..., Stack], origin: Origin
) -> None:
    stack = make_stack(frontends=2).start(processors=2, status=True)
    for index in range(8):
        origin.add(f"metrics/img/{index}/original.jpg", photo())

    def burst(images: range) -> None:
        for index in images:
            for _ in range(3):  # a miss, then two hits
                assert fresh_connection_get(stack, f"/metrics/img/{index}/w150.jpg") == 200
        assert fresh_connection_get(stack, "/metrics/img/0/nonsense.jpg") == 400

    # What runs: one series, this checkout's commit, the environment, libvips.
    builds = [dict(labels) for name, labels in stack.metrics() if name == "image_server_build_info"]
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    assert len(builds) == 1 and builds[0]["environment"] == "test"
    assert builds[0]["commit"] == commit and builds[0]["libvips"].startswith("8.")
    burst(range(4))
    requests = host_counter(stack, "image_server_http_requests_total")
    assert requests == 13
    assert host_counter(stack, "image_server_http_requests_total", status="400") == 1
    assert host_counter(stack, "image_server_cache_misses_total") == 4
    assert host_counter(stack, "image_server_cache_hits_total") == 8
    assert host_counter(stack, "image_server_jobs_total", outcome="ok") == 4
    assert host_counter(stack, "image_server_original_downloads_total", outcome="ok") == 4
    assert host_counter(stack, "image_server_original_downloads_total", host="127.0.0.1") == 4
    assert host_counter(stack, "image_server_output_bytes_count") == 4
    assert host_counter(stack, "image_server_original_bytes_count") == 4
    # Each process' memory and CPU, read from /proc by the status server.
    usage = {
        (name, dict(labels)["pid"]): value
        for (name, labels), value in stack.metrics().items()
        if name in (MEMORY, CPU)
    }
    pids = {str(process.pid) for process in stack.processes.values()} - {
        str(stack.processes["status"].pid)
    }
    memory = {pid: value for (name, pid), value in usage.items() if name == MEMORY}
    assert set(memory) == pids and all(rss > 10_000_000 for rss in memory.values())
    assert {pid for (name, pid) in usage if name == CPU} == pids
    hits = host_counter(stack, "image_server_http_request_duration_seconds_count", cache="hit")
    assert hits == 8
    # Both frontends and both processors did part of it (their own log lines say so).
    for index in (0, 1):  # request lines are written in batches
        wait_until(lambda: '"event": "request"' in stack.access_log(index), what="lines")  # noqa: B023
    assert all(stack.log(f"processor_{n}").count('"event": "job"') > 0 for n in (0, 1))

    # A processor killed (its counts stay), then started again: counts keep adding up.
    stack.kill("processor_1", signal.SIGKILL)
    assert host_counter(stack, "image_server_jobs_total", outcome="ok") == 4
    stack.kill("frontend_1", signal.SIGTERM)
    assert host_counter(stack, "image_server_http_requests_total") == 13
    stack.start_processor(1)
    stack.start_frontend(1)
    burst(range(4, 8))
    assert host_counter(stack, "image_server_http_requests_total") == 26
    assert host_counter(stack, "image_server_jobs_total", outcome="ok") == 8
    assert host_counter(stack, "image_server_cache_hits_total") == 16
    serving = [p for p in stack.status_json()["processes"] if p["serving"]]
    assert sorted(p["program"] for p in serving) == ["frontend"] * 2 + ["processor"] * 2
    # The two processes started again count one restart each, the others none.
    restarts = {f"{p['program']}_{p['num']}": p["restarts"] for p in serving}
    assert restarts == {"frontend_0": 0, "frontend_1": 1, "processor_0": 0, "processor_1": 1}


def test_health_needs_a_consumer_of_image_resize(
    make_stack: Callable[..., Stack], origin: Origin
) -> None:
    stack = make_stack().start(processors=1, status=True)
    health = f"{stack.status_url}/health"
    wait_until(lambda: stack.http.request("GET", health).status == 200, what="healthy")
    stack.kill("processor_0", signal.SIGTERM)
    wait_until(lambda: stack.http.request("GET", health).status == 503, what="503")
    assert b"no processor consumes image.resize" in stack.http.request("GET", health).data
    stack.start_processor(0)
    wait_until(lambda: stack.http.request("GET", health).status == 200, what="healthy again")


def test_the_status_page_in_chromium_shows_an_incident(
    make_stack: Callable[..., Stack], origin: Origin, own_s3: S3Server
) -> None:
    # The origin fails one image, object storage stops, the janitor dies over a
    # budget the outputs overflow: what the operator on call must see at once.
    stack = make_stack(janitor_interval_s=0.5, cache_max_bytes=1, **own_s3.config())
    stack.start(processors=1, uploader=True, status=True)
    janitor = stack.spawn("janitor", "ops.janitor")
    origin.add("incident/img/1/original.jpg", photo())
    origin.add("incident/img/2/original.jpg", b"down for maintenance", status=500)
    own_s3.stop()
    assert stack.get("/incident/img/1/w100.jpg").status == 200  # its upload cannot land
    for width in (100, 101, 102):
        assert stack.get(f"/incident/img/2/w{width}.jpg").status == 502
    wait_until(lambda: stack.status_json()["disk"] is not None, what="a sweep")
    janitor.kill()
    janitor.wait(10)
    wait_until(lambda: stack.status_json()["janitor_late"], timeout_s=30, what="a late janitor")
    wait_until(
        lambda: not stack.status_json()["storage"].get("storage_reachable", True),
        timeout_s=30,
        what="the uploader seeing storage down",
    )
    dom = chromium("--dump-dom", f"{stack.status_url}/").decode()
    assert float(shown(dom, "errors.server_errors_per_min")) > 0
    assert shown(dom, "errors.server_errors_last_5_min.502") == "3"  # by status: an origin's
    assert int(shown(dom, "errors.downloads_failed_last_5_min.SourceUnavailable")) == 3
    # The failing origin, by host: 4 downloads in 5 minutes (one good image), 3 failed.
    assert int(shown(dom, "origins.127.0.0.1.downloads")) == 4
    assert int(shown(dom, "origins.127.0.0.1.failed")) == 3
    row = re.search(r'<tr data-origin="127.0.0.1">(.*?)</tr>', dom, re.S)
    assert row is not None and "SourceUnavailable 3" in row.group(1)
    failures = re.findall(r'<tr data-failure="502">(.*?)</tr>', dom, re.S)
    assert len(failures) == 3 and all("the source answered 500" in row for row in failures)
    assert "/incident/img/2/w102.jpg" in failures[0]  # newest first
    assert shown(dom, "storage.storage_reachable") == "no"
    assert "object storage" in shown(dom, "storage.storage_problem")
    assert "the janitor is late" in dom
    outputs = re.search(r"<tr><th>outputs</th><td>([^<]*)</td><td>([^<]*)</td>", dom)
    assert outputs is not None and outputs.group(2) == "1 B"  # over budget: its files are in use
    own_s3.start()
