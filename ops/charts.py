"""Small SVG charts drawn on the server: no JavaScript, nothing fetched from
a CDN (deployments may have no internet), and a page that shows its data
even with scripts off. Every data point is an element with its value in
`data-value` and a <title> tooltip, so a person can hover and a test can
count.
"""

import math
from dataclasses import dataclass

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

# Distinguishable in the admin's light and dark themes, and for the common
# colour-vision deficiencies (Okabe-Ito).
PALETTE = ("#0072b2", "#e69f00", "#009e73", "#d55e00", "#cc79a7", "#56b4e9", "#f0e442")
WIDTH, HEIGHT = 560, 200
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 48, 12, 12, 40


@dataclass
class Series:
    name: str
    values: list[float | None]  # None: no data at that point (a gap, not a zero)
    colour: str = ""


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 times a power of ten that is >= value:
    axis labels a person reads at a glance."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if step * power >= value:
            return step * power
    return 10 * power  # unreachable; keeps type checkers calm


def format_number(value: float) -> str:
    """Three significant digits below 100 (0.025, 2.5, 49.1), whole above."""
    if value == int(value) or abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}"


def line_chart(*, name: str, series: list[Series], labels: list[str], unit: str = "") -> SafeString:
    """Lines over shared x positions (`labels`), y from zero."""
    points = len(labels)
    present = [value for s in series for value in s.values if value is not None]
    top = nice_ceiling(max(present, default=0))
    plot_w = WIDTH - MARGIN_LEFT - MARGIN_RIGHT
    plot_h = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM

    def x(index: int) -> float:
        return MARGIN_LEFT + (plot_w * index / (points - 1) if points > 1 else plot_w / 2)

    def y(value: float) -> float:
        return MARGIN_TOP + plot_h * (1 - value / top)

    parts = [_svg_open(name)]
    parts += _y_axis(top, unit, y)
    for index in sorted({0, points // 2, points - 1}) if points else ():
        # The first and last labels align inwards, or they would be clipped.
        anchor = "start" if index == 0 and points > 1 else "end" if index == points - 1 and points > 1 else "middle"
        parts.append(
            f'<text x="{x(index):.1f}" y="{HEIGHT - MARGIN_BOTTOM + 14}" text-anchor="{anchor}" '
            f'class="ops-axis">{escape(labels[index])}</text>'
        )
    for number, one in enumerate(series):
        colour = one.colour or PALETTE[number % len(PALETTE)]
        segments, current = [], []
        for index, value in enumerate(one.values):
            if value is None:
                if current:
                    segments.append(current)
                current = []
                continue
            current.append((x(index), y(value)))
        if current:
            segments.append(current)
        for segment in segments:
            coordinates = " ".join(f"{px:.1f},{py:.1f}" for px, py in segment)
            parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{coordinates}"/>')
        for index, value in enumerate(one.values):
            if value is None:
                continue
            tip = f"{one.name}, {labels[index]}: {format_number(value)}{unit}"
            parts.append(
                f'<circle class="point" cx="{x(index):.1f}" cy="{y(value):.1f}" r="2.5" fill="{colour}" '
                f'data-series="{escape(one.name)}" data-value="{value:g}"><title>{escape(tip)}</title></circle>'
            )
    parts += _legend([(s.name, s.colour or PALETTE[n % len(PALETTE)]) for n, s in enumerate(series)])
    parts.append("</svg>")
    return mark_safe("".join(parts))


def bar_chart(*, name: str, bars: list[tuple[str, float]], unit: str = "", colour: str = PALETTE[0]) -> SafeString:
    """Horizontal bars, one per label, from zero."""
    height = MARGIN_TOP + 26 * max(len(bars), 1) + 24
    top = nice_ceiling(max((value for _, value in bars), default=0))
    left, plot_w = 170, WIDTH - 170 - MARGIN_RIGHT - 50
    parts = [_svg_open(name, height)]
    for row, (label, value) in enumerate(bars):
        bar_y = MARGIN_TOP + 26 * row
        bar_w = plot_w * value / top
        shown = f"{format_number(value)}{unit}"
        parts.append(
            f'<text x="{left - 6}" y="{bar_y + 14}" text-anchor="end" class="ops-label">'
            f"{escape(_shorten(label))}</text>"
            f'<rect class="bar" x="{left}" y="{bar_y}" width="{bar_w:.1f}" height="18" fill="{colour}" '
            f'data-series="{escape(label)}" data-value="{value:g}">'
            f"<title>{escape(label)}: {escape(shown)}</title></rect>"
            f'<text x="{left + bar_w + 6:.1f}" y="{bar_y + 14}" class="ops-label">{escape(shown)}</text>'
        )
    if not bars:
        parts.append(
            f'<text x="{WIDTH / 2}" y="{MARGIN_TOP + 16}" text-anchor="middle" class="ops-label">no data</text>'
        )
    parts.append("</svg>")
    return mark_safe("".join(parts))


def _svg_open(name: str, height: int = HEIGHT) -> str:
    return (
        f'<svg class="ops-chart" data-chart="{escape(name)}" viewBox="0 0 {WIDTH} {height}" '
        f'role="img" aria-label="{escape(name)}" xmlns="http://www.w3.org/2000/svg">'
    )


def _y_axis(top: float, unit: str, y) -> list[str]:
    parts = []
    for fraction in (0, 0.5, 1):
        value = top * fraction
        parts.append(
            f'<line x1="{MARGIN_LEFT}" x2="{WIDTH - MARGIN_RIGHT}" y1="{y(value):.1f}" y2="{y(value):.1f}" '
            f'class="ops-grid"/>'
            f'<text x="{MARGIN_LEFT - 6}" y="{y(value) + 4:.1f}" text-anchor="end" class="ops-axis">'
            f"{escape(format_number(value) + unit)}</text>"
        )
    return parts


def _legend(entries: list[tuple[str, str]]) -> list[str]:
    parts, offset = [], MARGIN_LEFT
    for name, colour in entries:
        parts.append(
            f'<rect x="{offset}" y="{HEIGHT - 14}" width="10" height="10" fill="{colour}"/>'
            f'<text x="{offset + 14}" y="{HEIGHT - 5}" class="ops-label">{escape(name)}</text>'
        )
        offset += 24 + 7 * len(name)
    return parts


def _shorten(label: str, limit: int = 26) -> str:
    return label if len(label) <= limit else label[: limit - 1] + "…"
