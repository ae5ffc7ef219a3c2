"""The status page: the report of status_report.py as one HTML page read at a glance.

Rendered from status_page.html by tornado.template, charts as inline SVG: no
script, no CDN (hosts may have no internet), and it refreshes itself every few
seconds. Every figure carries a
`data-figure` attribute naming its place in /status.json, so a test (or a
scraper) reads the page as reliably as the JSON.
"""

from __future__ import annotations

import html
import time
from pathlib import Path
from typing import Any

import tornado.template

from ops.status_report import Charts, Report, Series

_TEMPLATE = tornado.template.Template(
    Path(__file__).with_name("status_page.html").read_text(), name="status_page.html"
)
_REFRESH_S = 5
_CACHES = ("outputs", "originals", "masters")  # the janitor's budgets, in the page's order
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


def _percent(ratio: float | None) -> float | None:
    return None if ratio is None else round(ratio * 100, 1)


def _bytes(value: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:,.1f} {unit}" if unit != "B" else f"{int(value)} B"
        value /= 1024
    return ""


def _span(seconds: float) -> str:
    return f"{round(seconds)} s" if seconds < 120 else f"{round(seconds / 60)} min"


def chart(title: str, charts: Charts, names: list[str]) -> str:
    """A line chart of the series `names` over the last minutes (x: seconds ago)."""
    series: dict[str, Series] = {name: getattr(charts, name) for name in names}
    points = [p for name in names for p in series[name] if p[1] is not None]
    highest = max((float(p[1]) for p in points if p[1] is not None), default=0.0) or 1.0
    top = highest * 1.1  # headroom: the highest point is not drawn on the frame
    oldest = min((float(p[0]) for p in points if p[0] is not None), default=-60.0) or -60.0
    lines = []
    for name in names:
        coords = [
            f"{_CHART_W * (1 - float(ago) / oldest):.1f},{_CHART_H - _CHART_H * float(v) / top:.1f}"
            for ago, v in series[name]
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


def render(report: Report, host: str) -> str:
    disk = report.disk or {}
    return _TEMPLATE.generate(
        r=report,
        host=host,
        refresh_s=_REFRESH_S,
        sampled=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(report.sampled_epoch_s)),
        disk_rows=[(name, disk[name]) for name in _CACHES if isinstance(disk.get(name), dict)],
        figure=_figure,
        percent=_percent,
        size=_bytes,
        chart=chart,
    ).decode()
