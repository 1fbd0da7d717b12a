"""Small line charts as inline SVG: the model page needs no JavaScript and no network to draw them."""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from retrainer.timeline import Point

WIDTH, HEIGHT, PAD = 640, 180, 36


def line_chart(points: list[Point], *, title: str, percent: bool = False, threshold: float | None = None) -> str:
    """An SVG line chart of ``points`` (oldest first), with its first and last labels and the value range.

    Args:
        points: The values, oldest first.
        title: The chart's accessible title.
        percent: Show values as percentages.
        threshold: A horizontal reference line (e.g. the drift rule's share).
    """
    if not points:
        return f'<p class="empty">{escape(title)}: nothing recorded yet.</p>'
    values = [p.value for p in points] + ([threshold] if threshold is not None else [])
    low, high = min(values), max(values)
    if high == low:
        low, high = low - 0.5 * (abs(low) or 1), high + 0.5 * (abs(high) or 1)
    span_x = max(len(points) - 1, 1)

    def x(i: int) -> float:
        return PAD + (WIDTH - 2 * PAD) * i / span_x

    def y(v: float) -> float:
        return HEIGHT - PAD - (HEIGHT - 2 * PAD) * (v - low) / (high - low)

    def fmt(v: float) -> str:
        return f"{v:.0%}" if percent else f"{v:.4g}"

    path = " ".join(f"{'M' if i == 0 else 'L'}{x(i):.1f},{y(p.value):.1f}" for i, p in enumerate(points))
    dots = "".join(
        f'<circle cx="{x(i):.1f}" cy="{y(p.value):.1f}" r="3"><title>{escape(p.label)}: {fmt(p.value)}</title>'
        "</circle>"
        for i, p in enumerate(points)
    )
    reference = ""
    if threshold is not None:
        at = y(threshold)
        reference = (
            f'<line class="threshold" x1="{PAD}" x2="{WIDTH - PAD}" y1="{at:.1f}" y2="{at:.1f}"/>'
            f'<text x="{WIDTH - PAD}" y="{at - 4:.1f}" text-anchor="end">rule {fmt(threshold)}</text>'
        )
    return (
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}">'
        f"<title>{escape(title)}</title>"
        f'<text x="4" y="{y(high) + 4:.1f}">{fmt(high)}</text><text x="4" y="{y(low) + 4:.1f}">{fmt(low)}</text>'
        f"{reference}"
        f'<path d="{path}"/>{dots}'
        f'<text x="{PAD}" y="{HEIGHT - 8}">{escape(points[0].label)}</text>'
        f'<text x="{WIDTH - PAD}" y="{HEIGHT - 8}" text-anchor="end">{escape(points[-1].label)}</text>'
        "</svg>"
    )
