"""Time-series charts as hand-written SVG: stacked panels over one time axis, no library.

A chart is a title and panels; a panel is a y-axis label (with its unit) and series; a
series is a name, a colour and (x, y) points, drawn as one polyline. The panels share the
x axis (seconds into the run) and the legend (each series name once, with its colour), so
the same run's checks/s, latency and memory line up under each other. The file opens in
a browser and renders on GitHub (plain SVG 1.1: lines, polylines, text; no script).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from xml.sax.saxutils import escape

WIDTH, PANEL_H, GAP, LEFT, RIGHT, TOP = 760, 120, 34, 72, 20, 64
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


@dataclass
class Series:
    name: str
    points: list[tuple[float, float]]
    colour: str = COLOURS[0]
    dashed: bool = False


@dataclass
class Panel:
    label: str  # the y axis: what and its unit, "checks/s"
    series: list[Series] = field(default_factory=list)


def nice_ceiling(value: float) -> float:
    """The smallest 1, 2, 2.5 or 5 times a power of ten at or above `value` (1 for <= 0)."""
    if value <= 0 or not math.isfinite(value):
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * power * (1 + 1e-9):
            return step * power
    return 10 * power


def axis(value: float, ticks: int) -> tuple[float, int]:
    """An axis end at or above `value` and its number of intervals, each a nice step
    (1, 2, 2.5 or 5 times a power of ten), at most `ticks` of them: (15, 3) for 11, 4."""
    step = nice_ceiling(max(value, 1e-9) / ticks) if value > 0 else 1.0
    count = max(1, math.ceil(value / step - 1e-9)) if value > 0 else ticks
    return step * count, count


def _number(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 or v == int(v) else f"{v:.3g}"


def svg_chart(title: str, subtitle: str, panels: list[Panel], x_label: str = "seconds") -> str:
    """The chart as an SVG document (a string)."""
    xs = [x for p in panels for s in p.series for x, _ in s.points]
    x_max, x_ticks = axis(max(xs, default=1.0), 8)
    plot_w = WIDTH - LEFT - RIGHT
    height = TOP + len(panels) * (PANEL_H + GAP) + 30
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="11">',
        f'<rect width="{WIDTH}" height="{height}" fill="#ffffff"/>',
        f'<text x="{LEFT}" y="18" font-size="15" font-weight="bold">{escape(title)}</text>',
        f'<text x="{LEFT}" y="34" fill="#555555">{escape(subtitle)}</text>',
    ]
    legend, lx = {}, LEFT
    for panel in panels:
        for s in panel.series:
            legend.setdefault(s.name, s)
    for name, s in legend.items():  # one row of swatches under the subtitle
        dash = ' stroke-dasharray="5,3"' if s.dashed else ""
        out.append(
            f'<line x1="{lx}" y1="48" x2="{lx + 18}" y2="48" stroke="{s.colour}" '
            f'stroke-width="2"{dash}/>'
        )
        out.append(f'<text x="{lx + 22}" y="52">{escape(name)}</text>')
        lx += 34 + 6.5 * len(name)
    for n, panel in enumerate(panels):
        top = TOP + n * (PANEL_H + GAP) + 10
        y_max, y_ticks = axis(max((y for s in panel.series for _, y in s.points), default=0.0), 4)
        bottom = top + PANEL_H
        out.append(f'<g class="panel" data-label="{escape(panel.label)}">')
        out.append(
            f'<rect x="{LEFT}" y="{top}" width="{plot_w}" height="{PANEL_H}" fill="none" '
            'stroke="#999999"/>'
        )
        for i in range(y_ticks + 1):  # y grid and ticks, 0 to the top
            y = bottom - PANEL_H * i / y_ticks
            out.append(
                f'<line x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + plot_w}" y2="{y:.1f}" '
                'stroke="#eeeeee"/>'
            )
            out.append(
                f'<text x="{LEFT - 4}" y="{y + 4:.1f}" text-anchor="end">'
                f"{_number(y_max * i / y_ticks)}</text>"
            )
        out.append(
            f'<text x="14" y="{top + PANEL_H / 2:.1f}" text-anchor="middle" '
            f'transform="rotate(-90 14 {top + PANEL_H / 2:.1f})">{escape(panel.label)}</text>'
        )
        for i in range(x_ticks + 1):  # x ticks under every panel
            x = LEFT + plot_w * i / x_ticks
            out.append(
                f'<line x1="{x:.1f}" y1="{bottom}" x2="{x:.1f}" y2="{bottom + 4}" '
                'stroke="#999999"/>'
            )
            out.append(
                f'<text x="{x:.1f}" y="{bottom + 15}" text-anchor="middle">'
                f"{_number(x_max * i / x_ticks)}</text>"
            )
        for s in panel.series:
            points = " ".join(
                f"{LEFT + plot_w * x / x_max:.1f},{bottom - PANEL_H * min(y, y_max) / y_max:.1f}"
                for x, y in s.points
            )
            dash = ' stroke-dasharray="5,3"' if s.dashed else ""
            out.append(
                f'<polyline data-series="{escape(s.name)}" fill="none" stroke="{s.colour}" '
                f'stroke-width="1.5"{dash} points="{points}"/>'
            )
        out.append("</g>")
    out.append(
        f'<text x="{LEFT + plot_w / 2}" y="{height - 6}" text-anchor="middle">'
        f"{escape(x_label)}</text>"
    )
    out.append("</svg>")
    return "\n".join(out) + "\n"
