"""The Devices page's charts, rendered here as SVG (no script, no library, no CDN).

Each chart is an accessible image: `role="img"` with a title and a description that
states the numbers, and a `<title>` on every bar for a pointer's tooltip. Colours are
the Okabe-Ito palette, distinguishable with the common colour-vision deficiencies.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from html import escape

from appliance.admin.inventory import ModelVersions, version_key

PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#555555")
TEXT = "#1f1f1f"
GRID = "#c8c8c8"
FONT = 'font-family="system-ui, sans-serif" font-size="12"'


def _svg(width: int, height: int, ident: str, title: str, desc: str, body: list[str]) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" class="chart" '
        f'aria-labelledby="{ident}-title {ident}-desc" {FONT}>'
        f'<title id="{ident}-title">{escape(title)}</title>'
        f'<desc id="{ident}-desc">{escape(desc)}</desc>' + "".join(body) + "</svg>"
    )


def versions_chart(data: Sequence[ModelVersions], width: int = 720) -> str:
    """A stacked horizontal bar per model: how many devices run which version."""
    title = "Versions per model"
    if not data:
        return _svg(
            width,
            40,
            "versions",
            title,
            "No device has checked in yet.",
            [f'<text x="8" y="24" fill="{TEXT}">No device has checked in yet.</text>'],
        )
    versions = sorted({v for m in data for v, _ in m.versions}, key=version_key)
    colour = {v: PALETTE[i % len(PALETTE)] for i, v in enumerate(versions)}
    label_w, bar_h, gap, top = 150, 22, 8, 8
    plot_w = width - label_w - 60
    most = max(m.total for m in data)
    body: list[str] = []
    y = top
    for m in data:
        body.append(
            f'<text x="{label_w - 8}" y="{y + bar_h * 0.7:.1f}" text-anchor="end" '
            f'fill="{TEXT}">{escape(m.model)}</text>'
        )
        x = float(label_w)
        for version, count in m.versions:
            w = plot_w * count / most
            body.append(
                f'<rect x="{x:.1f}" y="{y}" width="{max(w, 1):.1f}" height="{bar_h}" '
                f'fill="{colour[version]}" stroke="#ffffff" stroke-width="1">'
                f"<title>{escape(m.model)}: {count} on {escape(version)}</title></rect>"
            )
            x += w
        body.append(
            f'<text x="{x + 6:.1f}" y="{y + bar_h * 0.7:.1f}" fill="{TEXT}">{m.total}</text>'
        )
        y += bar_h + gap
    # the legend: one swatch and label per version, wrapping
    y += 6
    lx = float(label_w)
    for version in versions:
        item_w = 28 + 7.2 * len(version)
        if lx + item_w > width:
            lx, y = float(label_w), y + 20
        body.append(
            f'<rect x="{lx:.1f}" y="{y}" width="14" height="14" fill="{colour[version]}"/>'
            f'<text x="{lx + 19:.1f}" y="{y + 11}" fill="{TEXT}">{escape(version)}</text>'
        )
        lx += item_w
    height = y + 24
    desc = "; ".join(f"{m.model}: " + ", ".join(f"{n} on {v}" for v, n in m.versions) for m in data)
    return _svg(width, height, "versions", title, desc, body)


def checkins_chart(days: Sequence[tuple[date, int]], width: int = 720, height: int = 220) -> str:
    """A bar per day: how many update checks the phones made."""
    title = f"Update checks per day, last {len(days)} days"
    desc = ", ".join(f"{d.isoformat()}: {n}" for d, n in days) or "no data"
    left, right, top, bottom = 48, 12, 12, 36
    plot_w, plot_h = width - left - right, height - top - bottom
    most = max((n for _, n in days), default=0)
    scale_max = _nice_ceiling(most)
    body: list[str] = []
    for i in range(5):  # grid lines and y labels
        value = scale_max * i / 4
        y = top + plot_h - plot_h * i / 4
        body.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" '
            f'stroke="{GRID}" stroke-width="1"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" fill="{TEXT}">'
            f"{value:g}</text>"
        )
    if days:
        slot = plot_w / len(days)
        for i, (day, count) in enumerate(days):
            h = plot_h * count / scale_max if scale_max else 0
            x = left + i * slot + slot * 0.15
            body.append(
                f'<rect x="{x:.1f}" y="{top + plot_h - h:.1f}" width="{slot * 0.7:.1f}" '
                f'height="{h:.1f}" fill="{PALETTE[0]}"><title>{day.isoformat()}: {count} '
                f"check(s)</title></rect>"
            )
            if (len(days) - 1 - i) % 2 == 0 or len(days) <= 8:  # today always labelled
                body.append(
                    f'<text x="{x + slot * 0.35:.1f}" y="{height - bottom + 16}" '
                    f'text-anchor="middle" fill="{TEXT}">{day.strftime("%m-%d")}</text>'
                )
    return _svg(width, height, "checkins", title, desc, body)


def _nice_ceiling(n: int) -> int:
    """The smallest of 4, 8, 20, 40, 80, 200... at or above n (grid lines at quarters)."""
    if n <= 4:
        return 4
    step = 1
    while True:
        for m in (4, 8, 20):
            if n <= m * step:
                return m * step
        step *= 10
