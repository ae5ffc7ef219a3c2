"""The status page: the report of report.py as one HTML page read at a glance.

Rendered from page.html by tornado.template, charts as inline SVG: no
script, no CDN (hosts may have no internet), and it refreshes itself every few
seconds. Every figure carries a
`data-figure` attribute naming its place in /status.json, so a test (or a
scraper) reads the page as reliably as the JSON.
"""

from __future__ import annotations

import html
import math
import time
from pathlib import Path
from typing import Any

import tornado.template

from ops.status.report import Charts, Report, Series

_TEMPLATE = tornado.template.Template(
    Path(__file__).with_name("page.html").read_text(), name="page.html"
)
_REFRESH_S = 5
_CACHES = ("outputs", "originals", "masters")  # the janitor's budgets, in the page's order
_CHART_W, _CHART_H = 480, 150
_AXIS_LEFT, _AXIS_TOP, _AXIS_BOTTOM = 40, 8, 16  # room for the labels of the axes
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


def chart(title: str, charts: Charts, names: list[str], log: bool = False) -> str:
    """A line chart of the series `names` over the last minutes, with its axes: the
    time (seconds ago) across, the values up, on a log scale when `log` (latency:
    hits take a millisecond, misses hundreds)."""
    series: dict[str, Series] = {name: getattr(charts, name) for name in names}
    values = [float(v) for name in names for _, v in series[name] if v is not None]
    highest = max(values, default=0.0) or 1.0
    agos = [float(ago) for name in names for ago, _ in series[name] if ago is not None]
    oldest = min(agos, default=-60.0)
    oldest = oldest or -60.0
    scale = _LogScale(highest) if log else _LinearScale(highest)
    plot_w, plot_h = _CHART_W - _AXIS_LEFT, _CHART_H - _AXIS_TOP - _AXIS_BOTTOM
    lines = []
    for name in names:
        coords = [
            f"{_AXIS_LEFT + plot_w * (1 - float(ago) / oldest):.1f},"
            f"{_AXIS_TOP + plot_h * (1 - scale.height(float(v))):.1f}"
            for ago, v in series[name]
            if v is not None and ago is not None
        ]
        if coords:
            lines.append(
                f'<polyline data-series="{name}" points="{" ".join(coords)}" fill="none" '
                f'stroke="{_COLOURS[name]}" stroke-width="2"/>'
            )
    axes = []
    for tick in scale.ticks():
        y = _AXIS_TOP + plot_h * (1 - scale.height(tick))
        axes.append(
            f'<line x1="{_AXIS_LEFT}" x2="{_CHART_W}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e4e4e4"/>'
            f'<text x="{_AXIS_LEFT - 4}" y="{y + 4:.1f}" text-anchor="end">{tick:g}</text>'
        )
    for share, anchor in ((0.0, "start"), (0.5, "middle"), (1.0, "end")):
        label = "now" if share == 1.0 else f"-{_span(-oldest * (1 - share))}"
        x = _AXIS_LEFT + plot_w * share
        axes.append(f'<text x="{x:.1f}" y="{_CHART_H - 4}" text-anchor="{anchor}">{label}</text>')
    legend = " ".join(
        f'<span style="color:{_COLOURS[n]}">■ {html.escape(n.replace("_", " "))}</span>'
        for n in names
    )
    return (
        f'<figure class="chart" data-chart="{names[0]}"><figcaption>{html.escape(title)} '
        f"(max {highest:,.1f}; last {_span(-oldest)}{'; log scale' if log else ''}) "
        f"{legend}</figcaption>"
        f'<svg width="{_CHART_W}" height="{_CHART_H}" viewBox="0 0 {_CHART_W} {_CHART_H}" '
        f'font-size="10" fill="#666">'
        f'<rect x="{_AXIS_LEFT}" y="{_AXIS_TOP}" width="{plot_w}" height="{plot_h}" '
        f'fill="#fafafa" stroke="#ccc"/>'
        f"{''.join(axes)}{''.join(lines)}</svg></figure>"
    )


class _LinearScale:
    def __init__(self, highest: float) -> None:
        self._top = _round_up(highest)

    def height(self, value: float) -> float:
        """Where `value` falls, 0 (bottom) to 1 (top)."""
        return value / self._top

    def ticks(self) -> list[float]:
        return [0.0, self._top / 2, self._top]


class _LogScale:
    _LOWEST = 0.1  # ms: nothing is drawn below

    def __init__(self, highest: float) -> None:
        self._low = math.log10(self._LOWEST)
        self._high = math.log10(_round_up(max(highest, 1.0)))

    def height(self, value: float) -> float:
        return (math.log10(max(value, self._LOWEST)) - self._low) / (self._high - self._low)

    def ticks(self) -> list[float]:
        return [10.0**power for power in range(math.ceil(self._low), math.floor(self._high) + 1)]


def _round_up(value: float) -> float:
    """The next of 1, 2, 5 x a power of ten at or above `value` (an axis' top)."""
    power = 10.0 ** math.floor(math.log10(value))
    return next(step * power for step in (1, 2, 5, 10) if step * power >= value)


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
