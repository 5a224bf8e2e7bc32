"""Charts as inline SVG drawn on the server: no JavaScript library, nothing fetched from a CDN."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape

# Colours with at least 3:1 contrast on white, distinguishable with the common colour-vision deficiencies.
STATUS_COLOURS: dict[str, str] = {
    "planned": "#6b7280",
    "sent": "#2563eb",
    "delivered": "#15803d",
    "failed": "#b91c1c",
    "undelivered": "#c2410c",
    "suppressed": "#7c3aed",
    "opt_outs": "#a16207",
}


def stacked_bars(
    title: str,
    days: Sequence[str],
    series: Mapping[str, Sequence[int]],
    *,
    width: int = 640,
    height: int = 220,
) -> str:
    """One bar per day, stacked by status, with a legend and a text alternative for screen readers."""
    left, bottom, top = 36, 28, 12
    plot_h = height - bottom - top
    totals = [sum(values[i] for values in series.values()) for i in range(len(days))]
    peak = max([*totals, 1])
    slot = (width - left - 8) / max(len(days), 1)
    bar_w = max(min(slot * 0.7, 40), 2)
    parts = [
        f'<svg role="img" aria-label="{escape(title)}" viewBox="0 0 {width} {height + 24}" class="chart">',
        f"<title>{escape(title)}</title>",
        f'<line x1="{left}" y1="{top + plot_h}" x2="{width - 4}" y2="{top + plot_h}" stroke="#9ca3af"/>',
        f'<text x="{left - 6}" y="{top + 4}" text-anchor="end" class="axis">{peak}</text>',
        f'<text x="{left - 6}" y="{top + plot_h}" text-anchor="end" class="axis">0</text>',
    ]
    for i, day in enumerate(days):
        x = left + i * slot + (slot - bar_w) / 2
        y = float(top + plot_h)
        for status, values in series.items():
            value = values[i]
            if not value:
                continue
            h = value / peak * plot_h
            y -= h
            colour = STATUS_COLOURS.get(status, "#374151")
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{h:.1f}" fill="{colour}">'
                f"<title>{escape(day)} {escape(status)}: {value}</title></rect>"
            )
        if len(days) <= 16 or i % max(len(days) // 8, 1) == 0:
            parts.append(
                f'<text x="{x + bar_w / 2:.1f}" y="{top + plot_h + 16}" text-anchor="middle" class="axis">'
                f"{escape(day[5:])}</text>"
            )
    x = left
    for status in series:
        colour = STATUS_COLOURS.get(status, "#374151")
        parts.append(f'<rect x="{x}" y="{height + 8}" width="10" height="10" fill="{colour}"/>')
        parts.append(f'<text x="{x + 14}" y="{height + 17}" class="legend">{escape(status)}</text>')
        x += 14 + 8 * len(status) + 14
    parts.append("</svg>")
    return "".join(parts)


def line_chart(
    title: str,
    points: Sequence[tuple[str, float]],
    *,
    lo: float,
    hi: float,
    width: int = 640,
    height: int = 200,
) -> str:
    """A line over time (e.g. the average survey score per day)."""
    left, bottom, top = 36, 28, 12
    plot_h, plot_w = height - bottom - top, width - left - 12
    parts = [
        f'<svg role="img" aria-label="{escape(title)}" viewBox="0 0 {width} {height}" class="chart">',
        f"<title>{escape(title)}</title>",
        f'<line x1="{left}" y1="{top + plot_h}" x2="{width - 4}" y2="{top + plot_h}" stroke="#9ca3af"/>',
        f'<text x="{left - 6}" y="{top + 4}" text-anchor="end" class="axis">{hi:g}</text>',
        f'<text x="{left - 6}" y="{top + plot_h}" text-anchor="end" class="axis">{lo:g}</text>',
    ]
    if points:
        step = plot_w / max(len(points) - 1, 1)
        coords = [
            (left + i * step, top + plot_h - (value - lo) / ((hi - lo) or 1) * plot_h)
            for i, (_, value) in enumerate(points)
        ]
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
        parts.append(f'<polyline points="{path}" fill="none" stroke="#2563eb" stroke-width="2"/>')
        for (x, y), (day, value) in zip(coords, points, strict=True):
            parts.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="#2563eb">'
                f"<title>{escape(day)}: {value:.2f}</title></circle>"
            )
    parts.append("</svg>")
    return "".join(parts)
