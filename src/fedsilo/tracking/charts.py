"""Line and bar charts as inline SVG text: what the HTML report draws, with no plotting library.

A report must open offline, years later, on a hospital machine with no network: inline SVG needs
no script, no CDN and no image files, stays sharp when zoomed, and its points can be checked in a
test (each series is one ``<path>`` whose ``data-points`` says how many values it draws).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)  # fmt: skip
WIDTH, HEIGHT = 520, 280
LEFT, RIGHT, TOP, BOTTOM = 58, 14, 30, 42
LEGEND_ROW = 16


@dataclass(frozen=True)
class Series:
    """One line: ``ys[i]`` at ``xs[i]``; a None or non-finite value leaves a gap."""

    label: str
    xs: Sequence[float]
    ys: Sequence[float | None]
    dashed: bool = False


def nice_ticks(lo: float, hi: float, target: int = 5) -> list[float]:
    """Round tick values (steps of 1, 2 or 5 times a power of ten) covering ``[lo, hi]``."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError("ticks need finite bounds")
    if hi < lo:
        lo, hi = hi, lo
    if hi == lo:
        pad = abs(lo) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / max(target, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    return [round(i * step, 12) for i in range(first, last + 1)]


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _legend(labels: Sequence[tuple[str, str, bool]]) -> tuple[list[str], int]:
    """Legend entries in rows above the plot; returns the SVG parts and the height they take."""
    parts, x, row = [], LEFT, 0
    for label, color, dashed in labels:
        width = 26 + 7 * len(label)
        if x + width > WIDTH - RIGHT and x > LEFT:
            x, row = LEFT, row + 1
        y = TOP + row * LEGEND_ROW
        dash = ' stroke-dasharray="5 3"' if dashed else ""
        parts.append(
            f'<line x1="{x}" y1="{y - 4}" x2="{x + 18}" y2="{y - 4}" stroke="{color}" stroke-width="2.5"{dash}/>'
            f'<text x="{x + 22}" y="{y}" class="legend">{escape(label)}</text>'
        )
        x += width
    return parts, (row + 1) * LEGEND_ROW if labels else 0


def _frame(title: str, y_label: str, x_label: str, legend_height: int) -> tuple[list[str], int]:
    top = TOP + legend_height
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {WIDTH} {HEIGHT + legend_height}" '
        f'width="{WIDTH}" height="{HEIGHT + legend_height}" role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f'<rect width="{WIDTH}" height="{HEIGHT + legend_height}" fill="#fff"/>',
        f'<text x="{WIDTH / 2}" y="16" class="title" text-anchor="middle">{escape(title)}</text>',
        f'<text x="{WIDTH / 2}" y="{HEIGHT + legend_height - 6}" class="axis-label" text-anchor="middle">'
        f"{escape(x_label)}</text>",
        f'<text transform="translate(13 {(top + HEIGHT + legend_height - BOTTOM) / 2}) rotate(-90)" '
        f'class="axis-label" text-anchor="middle">{escape(y_label)}</text>',
    ]
    return parts, top


def _y_axis(parts: list[str], ticks: list[float], top: int, bottom: int) -> None:
    lo, hi = ticks[0], ticks[-1]
    for t in ticks:
        y = bottom - (t - lo) / (hi - lo) * (bottom - top)
        parts.append(
            f'<line x1="{LEFT}" y1="{y:.2f}" x2="{WIDTH - RIGHT}" y2="{y:.2f}" class="grid"/>'
            f'<text x="{LEFT - 6}" y="{y + 4:.2f}" class="tick" text-anchor="end">{_fmt(t)}</text>'
        )


def line_chart(title: str, series: Sequence[Series], y_label: str, x_label: str = "round") -> str:
    """Lines with a dot at every value (so a one-round run still shows something)."""
    xs = [x for s in series for x, y in zip(s.xs, s.ys, strict=True) if _finite(y)]
    ys = [float(y) for s in series for y in s.ys if y is not None and _finite(y)]
    colors = [PALETTE[i % len(PALETTE)] for i in range(len(series))]
    legend, legend_height = _legend([(s.label, c, s.dashed) for s, c in zip(series, colors, strict=True)])
    parts, top = _frame(title, y_label, x_label, legend_height)
    bottom = HEIGHT + legend_height - BOTTOM
    parts += legend
    if not ys:
        parts.append(f'<text x="{WIDTH / 2}" y="{(top + bottom) / 2}" text-anchor="middle">no data</text></svg>')
        return "".join(parts)
    yt = nice_ticks(min(ys), max(ys))
    x_lo, x_hi = min(xs), max(xs)
    x_span = (x_hi - x_lo) or 1.0
    _y_axis(parts, yt, top, bottom)

    def px(x: float) -> float:
        return LEFT + 8 + (x - x_lo) / x_span * (WIDTH - RIGHT - LEFT - 16)

    def py(y: float) -> float:
        return bottom - (y - yt[0]) / (yt[-1] - yt[0]) * (bottom - top)

    for x in nice_ticks(x_lo, x_hi) if x_hi > x_lo else [x_lo]:
        if x_lo - 1e-9 <= x <= x_hi + 1e-9 and float(x).is_integer():  # rounds are whole numbers
            parts.append(f'<text x="{px(x):.2f}" y="{bottom + 16}" class="tick" text-anchor="middle">{_fmt(x)}</text>')
    parts.append(f'<line x1="{LEFT}" y1="{bottom}" x2="{WIDTH - RIGHT}" y2="{bottom}" class="axis"/>')
    for s, color in zip(series, colors, strict=True):
        points, steps, pen_down = [], [], False
        for x, y in zip(s.xs, s.ys, strict=True):
            if y is None or not _finite(y):
                pen_down = False  # a missing value (a failed or unsampled round) is a gap, not a bridge
                continue
            points.append((px(x), py(float(y))))
            steps.append(f"{'L' if pen_down else 'M'}{points[-1][0]:.2f},{points[-1][1]:.2f}")
            pen_down = True
        if not points:
            continue
        d = " ".join(steps)
        dash = ' stroke-dasharray="5 3"' if s.dashed else ""
        parts.append(
            f'<path class="series" data-label="{escape(s.label)}" data-points="{len(points)}" d="{d}" '
            f'fill="none" stroke="{color}" stroke-width="2"{dash}/>'
        )
        parts += [f'<circle cx="{x:.2f}" cy="{y:.2f}" r="2.6" fill="{color}"/>' for x, y in points]
    parts.append("</svg>")
    return "".join(parts)


def bar_chart(
    title: str, bars: Sequence[tuple[str, float]], y_label: str, zero_based: bool = True, color: str | None = None
) -> str:
    """Vertical bars, one per label, with the value written above each; one colour each unless ``color``."""
    values = [v for _, v in bars if _finite(v)]
    parts, top = _frame(title, y_label, "", 0)
    bottom = HEIGHT - BOTTOM
    if not values:
        parts.append(f'<text x="{WIDTH / 2}" y="{(top + bottom) / 2}" text-anchor="middle">no data</text></svg>')
        return "".join(parts)
    lo = min(0.0, *values) if zero_based else min(values)
    ticks = nice_ticks(lo, max(values))
    _y_axis(parts, ticks, top, bottom)
    slot = (WIDTH - LEFT - RIGHT) / len(bars)
    base = bottom - (max(ticks[0], 0.0) - ticks[0]) / (ticks[-1] - ticks[0]) * (bottom - top)
    for i, (label, value) in enumerate(bars):
        x = LEFT + i * slot + slot * 0.15
        cx = LEFT + (i + 0.5) * slot
        parts.append(f'<text x="{cx:.2f}" y="{bottom + 16}" class="tick" text-anchor="middle">{escape(label)}</text>')
        if not _finite(value):
            continue
        y = bottom - (value - ticks[0]) / (ticks[-1] - ticks[0]) * (bottom - top)
        y0, h = min(y, base), abs(base - y)
        parts.append(
            f'<rect class="bar" data-label="{escape(label)}" x="{x:.2f}" y="{y0:.2f}" width="{slot * 0.7:.2f}" '
            f'height="{max(h, 0.5):.2f}" fill="{color or PALETTE[i % len(PALETTE)]}"/>'
            f'<text x="{cx:.2f}" y="{y0 - 4:.2f}" class="tick" text-anchor="middle">{_fmt(value)}</text>'
        )
    parts.append(f'<line x1="{LEFT}" y1="{base:.2f}" x2="{WIDTH - RIGHT}" y2="{base:.2f}" class="axis"/></svg>')
    return "".join(parts)
