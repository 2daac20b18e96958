"""Small inline-SVG charts for the HTML report (no plotting library, no CDN).

Each function returns one `<svg class="chart">` element with a `<title>`; scores
are in points (0-100) and error bars are 95% confidence intervals.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

PALETTE = ("#4269d0", "#efb118", "#ff725c", "#6cc5b0", "#3ca951", "#ff8ab7", "#a463f2", "#97bbf5", "#9c6b4e", "#9498a0")
LABEL_WIDTH = 230
PLOT_WIDTH = 420
ROW = 22
FONT = 'font-family="system-ui, sans-serif" font-size="12"'


@dataclass(frozen=True)
class Bar:
    label: str
    value: float
    low: float = math.nan
    high: float = math.nan


def _ok(*values: float) -> bool:
    return all(v is not None and not math.isnan(v) for v in values)


def _svg(width: int, height: int, title: str, body: list[str]) -> str:
    return (
        f'<svg class="chart" role="img" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" {FONT}><title>{escape(title)}</title>'
        f'<text x="4" y="16" font-weight="600">{escape(title)}</text>' + "".join(body) + "</svg>"
    )


def _axis(x0: float, y0: float, y1: float, scale_max: float) -> list[str]:
    out = []
    for tick in range(0, int(scale_max) + 1, 20 if scale_max > 50 else 10):
        x = x0 + PLOT_WIDTH * tick / scale_max
        out.append(f'<line x1="{x:.1f}" y1="{y0}" x2="{x:.1f}" y2="{y1}" stroke="#ddd"/>')
        out.append(f'<text x="{x:.1f}" y="{y1 + 14}" text-anchor="middle" fill="#555">{tick}</text>')
    return out


def _bar(x0: float, y: float, bar: Bar, color: str, scale_max: float, height: float = ROW - 6) -> list[str]:
    def at(v: float) -> float:
        return x0 + PLOT_WIDTH * max(0.0, min(v, scale_max)) / scale_max

    out = []
    if _ok(bar.value):
        tip = f"{bar.label}: {bar.value:.1f}" + (f" [{bar.low:.1f}, {bar.high:.1f}]" if _ok(bar.low, bar.high) else "")
        out.append(
            f'<rect class="bar" x="{x0}" y="{y:.1f}" width="{at(bar.value) - x0:.1f}" height="{height}" fill="{color}">'
            f"<title>{escape(tip)}</title></rect>"
        )
        text_x = max(at(bar.value), at(bar.high) if _ok(bar.high) else 0) + 4
        out.append(f'<text x="{text_x:.1f}" y="{y + height - 4:.1f}" fill="#222">{bar.value:.1f}</text>')
    if _ok(bar.low, bar.high):
        mid = y + height / 2
        out.append(
            f'<path class="errorbar" d="M{at(bar.low):.1f},{mid - 5:.1f}v10M{at(bar.low):.1f},{mid:.1f}H{at(bar.high):.1f}'
            f'M{at(bar.high):.1f},{mid - 5:.1f}v10" stroke="#111" stroke-width="1.3" fill="none"/>'
        )
    return out


def bar_chart(title: str, bars: Sequence[Bar], reference: float | None = None, reference_label: str = "card") -> str:
    """Horizontal bars with 95% CI whiskers; an optional dashed reference line (the card's number)."""
    scale_max = 100.0
    top, x0 = 28, LABEL_WIDTH
    body = []
    for i, bar in enumerate(bars):
        y = top + i * ROW
        body.append(f'<text x="{x0 - 6}" y="{y + ROW - 10}" text-anchor="end">{escape(bar.label)}</text>')
        body += _bar(x0, y, bar, PALETTE[i % len(PALETTE)], scale_max)
    bottom = top + len(bars) * ROW
    body = _axis(x0, top, bottom, scale_max) + body
    if reference is not None and _ok(reference):
        x = x0 + PLOT_WIDTH * reference / scale_max
        body.append(
            f'<line class="reference" x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{bottom}" stroke="#c00" '
            f'stroke-dasharray="4 3"><title>{escape(reference_label)}: {reference:.1f}</title></line>'
        )
        body.append(f'<text x="{x + 3:.1f}" y="{top - 6}" fill="#c00">{escape(reference_label)} {reference:.1f}</text>')
    return _svg(x0 + PLOT_WIDTH + 60, bottom + 24, title, body)


def grouped_bar_chart(title: str, groups: Sequence[str], series: Sequence[tuple[str, Sequence[Bar]]]) -> str:
    """One block of bars per group (e.g. category), one colour per series (e.g. run)."""
    scale_max = 100.0
    x0, legend_h = LABEL_WIDTH, 18 * len(series)
    top = 28 + legend_h
    body = []
    for j, (name, _) in enumerate(series):
        y = 26 + 18 * j
        body.append(f'<rect x="{x0}" y="{y}" width="12" height="12" fill="{PALETTE[j % len(PALETTE)]}"/>')
        body.append(f'<text x="{x0 + 18}" y="{y + 11}">{escape(name)}</text>')
    height = ROW - 8
    block = height * len(series) + 10
    for i, group in enumerate(groups):
        y = top + i * block
        body.append(f'<text x="{x0 - 6}" y="{y + block / 2:.1f}" text-anchor="end">{escape(group)}</text>')
        for j, (_, bars) in enumerate(series):
            body += _bar(x0, y + j * height, bars[i], PALETTE[j % len(PALETTE)], scale_max, height - 2)
    bottom = top + len(groups) * block
    return _svg(x0 + PLOT_WIDTH + 60, bottom + 24, title, _axis(x0, top, bottom, scale_max) + body)


@dataclass(frozen=True)
class Point:
    series: str
    label: str
    x: float
    y: float
    low: float = math.nan
    high: float = math.nan
    hollow: bool = False


def scatter_chart(title: str, points: Sequence[Point], x_label: str, y_label: str) -> str:
    """Points with vertical CI whiskers, one colour per series; hollow markers for reference points."""
    left, top, width, height = 56, 30, 460, 260
    usable = [p for p in points if _ok(p.x, p.y)]
    xs = [p.x for p in usable] or [0.0, 1.0]
    ys = [v for p in usable for v in (p.y, p.low, p.high) if _ok(v)] or [0.0, 100.0]
    x_lo, x_hi = _padded(min(xs), max(xs))
    y_lo, y_hi = _padded(min(ys), max(ys))

    def sx(v: float) -> float:
        return left + width * (v - x_lo) / (x_hi - x_lo)

    def sy(v: float) -> float:
        return top + height * (1 - (v - y_lo) / (y_hi - y_lo))

    body = [
        f'<rect x="{left}" y="{top}" width="{width}" height="{height}" fill="none" stroke="#bbb"/>',
        f'<text x="{left + width / 2}" y="{top + height + 34}" text-anchor="middle">{escape(x_label)}</text>',
        (
            f'<text x="14" y="{top + height / 2}" transform="rotate(-90 14 {top + height / 2})" '
            f'text-anchor="middle">{escape(y_label)}</text>'
        ),
    ]
    for i in range(5):
        xv, yv = x_lo + (x_hi - x_lo) * i / 4, y_lo + (y_hi - y_lo) * i / 4
        body.append(f'<text x="{sx(xv):.1f}" y="{top + height + 16}" text-anchor="middle" fill="#555">{xv:.1f}</text>')
        body.append(f'<text x="{left - 6}" y="{sy(yv) + 4:.1f}" text-anchor="end" fill="#555">{yv:.1f}</text>')
    names = list(dict.fromkeys(p.series for p in usable))
    for p in usable:
        color = PALETTE[names.index(p.series) % len(PALETTE)]
        if _ok(p.low, p.high):
            body.append(
                f'<path class="errorbar" d="M{sx(p.x):.1f},{sy(p.low):.1f}V{sy(p.high):.1f}" stroke="{color}" fill="none"/>'
            )
        fill = "white" if p.hollow else color
        body.append(
            f'<circle class="point" cx="{sx(p.x):.1f}" cy="{sy(p.y):.1f}" r="5" fill="{fill}" stroke="{color}" '
            f'stroke-width="2"><title>{escape(f"{p.series} {p.label}: {p.y:.1f} at {p.x:.1f}")}</title></circle>'
        )
        body.append(f'<text x="{sx(p.x) + 8:.1f}" y="{sy(p.y) + 4:.1f}">{escape(p.label)}</text>')
    for j, name in enumerate(names):
        y = top + 14 + 16 * j
        body.append(f'<circle cx="{left + width + 16}" cy="{y - 4}" r="5" fill="{PALETTE[j % len(PALETTE)]}"/>')
        body.append(f'<text x="{left + width + 26}" y="{y}">{escape(name)}</text>')
    legend_width = max((len(n) for n in names), default=0) * 7 + 40
    return _svg(left + width + legend_width, top + height + 44, title, body)


def _padded(low: float, high: float) -> tuple[float, float]:
    if high - low < 1e-9:
        return low - 1, high + 1
    pad = (high - low) * 0.12
    return low - pad, high + pad
