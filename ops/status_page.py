"""The status page: the report of status_report.py as one HTML page read at a glance.

Server-rendered, charts as inline SVG: no script, no CDN (hosts may have no
internet), and it refreshes itself every few seconds. Every figure carries a
`data-figure` attribute naming its place in /status.json, so a test (or a
scraper) reads the page as reliably as the JSON.
"""

from __future__ import annotations

import html
import time
from typing import Any

_REFRESH_S = 5
_CHART_W, _CHART_H = 480, 140
_COLOURS = {
    "requests_per_s": "#1f77b4",
    "p50_ms": "#2ca02c",
    "p95_ms": "#ff7f0e",
    "p99_ms": "#d62728",
}


def _figure(path: str, value: Any, unit: str = "") -> str:
    shown = "–" if value is None else f"{value:,}" if isinstance(value, int) else str(value)
    return f'<span class="figure" data-figure="{path}">{html.escape(shown)}</span>{unit}'


def _percentiles_row(label: str, resizes: dict[str, Any], name: str) -> str:
    """A row of the p50 and p95 (ms, last 5 minutes) of `resizes[name]`."""
    cells = [_figure(f"resizes.{name}.{p}", resizes[name][p]) for p in ("p50_ms", "p95_ms")]
    return _row(f"{label} p50 / p95, ms (5 min)", *cells)


def _row(label: str, *cells: str) -> str:
    return f"<tr><th>{html.escape(label)}</th>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def _bytes(value: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:,.1f} {unit}" if unit != "B" else f"{int(value)} B"
        value /= 1024
    return ""


def _span(seconds: float) -> str:
    return f"{round(seconds)} s" if seconds < 120 else f"{round(seconds / 60)} min"


def chart(title: str, series: dict[str, list[list[float | None]]], names: list[str]) -> str:
    """A line chart of `names` over the last minutes (x: seconds ago)."""
    points = [p for name in names for p in series.get(name, []) if p[1] is not None]
    highest = max((float(p[1]) for p in points if p[1] is not None), default=0.0) or 1.0
    top = highest * 1.1  # headroom: the highest point is not drawn on the frame
    oldest = min((float(p[0]) for p in points if p[0] is not None), default=-60.0) or -60.0
    lines = []
    for name in names:
        coords = [
            f"{_CHART_W * (1 - float(ago) / oldest):.1f},{_CHART_H - _CHART_H * float(v) / top:.1f}"
            for ago, v in series.get(name, [])
            if v is not None and ago is not None
        ]
        if coords:
            lines.append(
                f'<polyline data-series="{name}" points="{" ".join(coords)}" fill="none" '
                f'stroke="{_COLOURS[name]}" stroke-width="2"/>'
            )
    legend = " ".join(
        f'<span style="color:{_COLOURS[n]}">■ {html.escape(n.replace("_", " "))}</span>'
        for n in names
    )
    return (
        f'<figure class="chart" data-chart="{names[0]}"><figcaption>{html.escape(title)} '
        f"(max {highest:,.1f}; last {_span(-oldest)}) {legend}</figcaption>"
        f'<svg width="{_CHART_W}" height="{_CHART_H}" viewBox="0 0 {_CHART_W} {_CHART_H}">'
        f'<rect width="{_CHART_W}" height="{_CHART_H}" fill="#fafafa" stroke="#ccc"/>'
        f"{''.join(lines)}</svg></figure>"
    )


def render(report: dict[str, Any], host: str) -> str:
    now, requests, resizes = report["now"], report["requests"], report["resizes"]
    uploads, latency = report["uploads"], requests["latency_last_5_min"]
    healthy = report["health"] == "ok"
    queues = "".join(
        _row(
            q["name"],
            _figure(f"queues.{q['name']}.messages", q["messages"]),
            _figure(f"queues.{q['name']}.consumers", q["consumers"]),
        )  # fmt: skip
        for q in report["queues"]
    )
    processes = "".join(
        _row(
            f"{p['program']}_{p['num']}",
            str(p["pid"]),
            "serving" if p["serving"] else "starting or draining",
            f"{p['uptime_s']} s",
        )  # fmt: skip
        for p in report["processes"]
    )
    disk = report["disk"] or {}
    disk_rows = "".join(
        _row(
            name,
            _bytes(disk[name]["bytes_used"]),
            _bytes(disk[name]["max_bytes"]),
            f"{disk[name]['files']:,}",
        )  # fmt: skip
        for name in ("outputs", "originals", "masters")
        if isinstance(disk.get(name), dict)
    ) or _row("janitor", "no figures yet")
    ratio = requests["hit_ratio"]
    hit_percent = None if ratio is None else round(ratio * 100, 1)  # since the host started
    sampled = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(report["sampled_epoch_s"]))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="{_REFRESH_S}">
<title>image server · {html.escape(host)}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }}
h1 {{ font-size: 1.4em; margin: 0 0 .3em; }} h2 {{ font-size: 1.1em; margin: 1.2em 0 .4em; }}
.health {{ padding: .3em .8em; border-radius: 4px; display: inline-block; }}
.ok {{ background: #dff5e1; }} .bad {{ background: #fde2e1; }}
.tiles {{ display: flex; gap: 1em; flex-wrap: wrap; }}
.tile {{ border: 1px solid #ddd; border-radius: 6px; padding: .5em 1em; min-width: 9em; }}
.tile .figure {{ font-size: 1.6em; font-weight: 600; }}
table {{ border-collapse: collapse; }} th, td {{ text-align: left; padding: .15em .8em .15em 0; }}
.columns {{ display: flex; gap: 3em; flex-wrap: wrap; }} figure {{ margin: .5em 0; }}
</style></head><body>
<h1>image server · {html.escape(host)}</h1>
<div class="health {"ok" if healthy else "bad"}">health: {_figure("health", report["health"])}</div>
<small>sampled {sampled}; this page refreshes every {_REFRESH_S} s; JSON: /status.json</small>
<h2>Now</h2>
<div class="tiles">
<div class="tile">{_figure("now.images_processing", now["images_processing"])}
images processing</div>
<div class="tile">{_figure("now.originals_downloading", now["originals_downloading"])}
originals downloading</div>
<div class="tile">{_figure("requests.per_s_last_minute", requests["per_s_last_minute"])}
requests/s (last minute)</div>
<div class="tile">{_figure("requests.latency_last_5_min.p50_ms", latency["p50_ms"])} /
{_figure("requests.latency_last_5_min.p95_ms", latency["p95_ms"])} /
{_figure("requests.latency_last_5_min.p99_ms", latency["p99_ms"])}
latency p50 / p95 / p99, ms (5 min)</div>
</div>
{chart("Requests per second", report["charts"], ["requests_per_s"])}
{chart("Latency, ms", report["charts"], ["p50_ms", "p95_ms", "p99_ms"])}
<div class="columns"><div>
<h2>Requests since the host started</h2><table>
{_row("requests", _figure("requests.total", requests["total"]))}
{_row("cache hits", _figure("requests.cache_hits", requests["cache_hits"]))}
{_row("cache misses", _figure("requests.cache_misses", requests["cache_misses"]))}
{_row("of which from object storage", _figure("requests.from_store", requests["from_store"]))}
{_row("cache hit ratio", _figure("requests.hit_ratio", hit_percent, " %"))}
{
        "".join(
            _row(f"answered {cls}", _figure(f"requests.by_status_class.{cls}", n))
            for cls, n in requests["by_status_class"].items()
        )
    }
</table>
<h2>Resizes</h2><table>
{_row("done", _figure("resizes.done", resizes["done"]))}
{_row("failed", _figure("resizes.failed", resizes["failed"]))}
{_percentiles_row("resize time", resizes, "resize_time_last_5_min")}
{_percentiles_row("queue wait", resizes, "queue_wait_last_5_min")}
{
        _row(
            "originals downloaded",
            _figure("resizes.originals_downloaded", resizes["originals_downloaded"]),
        )
    }
</table>
<h2>Uploads to object storage</h2><table>
{_row("stored", _figure("uploads.stored", uploads["stored"]))}
{_row("queued (image.upload)", _figure("uploads.queued", uploads["queued"]))}
{_row("waiting for a retry", _figure("uploads.waiting_for_retry", uploads["waiting_for_retry"]))}
{_row("kept on disk", _figure("uploads.kept_on_disk", uploads["kept_on_disk"]))}
{
        _row(
            "retried / dead-lettered",
            _figure("uploads.retried", uploads["retried"]),
            _figure("uploads.dead_lettered", uploads["dead_lettered"]),
        )
    }
</table></div><div>
<h2>Queues (RabbitMQ)</h2><table><tr><th>queue</th><th>messages</th><th>consumers</th></tr>
{queues}</table>
<h2>Disk (janitor)</h2><table><tr><th>cache</th><th>used</th><th>budget</th><th>files</th></tr>
{disk_rows}</table>
<h2>Processes</h2><table><tr><th>process</th><th>pid</th><th>state</th><th>up</th></tr>
{processes}</table>
</div></div>
</body></html>
"""
