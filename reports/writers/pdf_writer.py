"""PDF with reportlab: a title, the parameters, the report's charts (built
from every row) and a table.

A PDF is read by people, so its table stops at settings.REPORTS_PDF_MAX_ROWS
rows and says so; the charts still sum every row, and CSV and XLSX have no
limit. reportlab lays a document out in memory, which is why the table is
capped rather than streamed. The built-in fonts cover Latin-1 only.
"""

import math
from collections.abc import Iterable, Sequence
from datetime import date, datetime, timedelta
from pathlib import Path
from xml.sax.saxutils import escape

from django.conf import settings
from django.utils import timezone
from reportlab.graphics.charts.barcharts import VerticalBarChart
from reportlab.graphics.charts.legends import Legend
from reportlab.graphics.shapes import Drawing
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4, landscape
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
from reportlab.lib.units import cm
from reportlab.pdfbase.pdfmetrics import stringWidth
from reportlab.platypus import LongTable, Paragraph, SimpleDocTemplate, Spacer, TableStyle

from reports.registry import Chart, Column
from reports.writers import Document

PAGE = landscape(A4)
MARGIN = 1.5 * cm
FONT_SIZE = 6.5
CELL_PADDING = 2
# Helvetica's digits are 0.556 em wide, most letters less: clipping at this
# width keeps a cell inside its column without measuring every string.
CHAR_WIDTH = FONT_SIZE * 0.56
CHART_HEIGHT = 170
MAX_CATEGORY_LABELS = 16
PALETTE = [colors.HexColor(c) for c in ("#1e7b34", "#b02a37", "#0b63b6", "#b35900", "#6c757d", "#6f42c1")]


def _text(value, tz) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, datetime):
        # To the minute: a PDF is read by people; CSV and XLSX keep the rest.
        return (value.astimezone(tz) if value.tzinfo else value).strftime("%Y-%m-%d %H:%M")
    if isinstance(value, timedelta):
        return f"{value.total_seconds():,.2f}"
    return str(value)


def _clip(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[: max(chars - 1, 1)] + "\u2026"


class _ChartData:
    """Each series summed per x value, in the order x values first appear."""

    def __init__(self, chart: Chart, keys: list[str]):
        self.chart = chart
        self.x_index = keys.index(chart.x)
        self.series_index = [keys.index(key) for key in chart.series]
        self.totals: dict[object, list[float]] = {}

    def add(self, row: Sequence) -> None:
        sums = self.totals.setdefault(row[self.x_index], [0.0] * len(self.series_index))
        for position, index in enumerate(self.series_index):
            sums[position] += row[index] or 0


def _category_label(value, tz, with_time: bool) -> str:
    if isinstance(value, datetime):
        local = value.astimezone(tz) if value.tzinfo else value
        return local.strftime("%m-%d %H:%M") if with_time else local.strftime("%Y-%m-%d")
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def _chart_drawing(data: _ChartData, width: float, tz) -> Drawing:
    chart_spec = data.chart
    xs = list(data.totals)
    with_time = any(
        isinstance(x, datetime) and (x.astimezone(tz) if x.tzinfo else x).time() != datetime.min.time() for x in xs
    )
    # Every label on a month of hourly bars would be an unreadable smear.
    step = max(1, math.ceil(len(xs) / MAX_CATEGORY_LABELS))
    labels = [_category_label(x, tz, with_time) if i % step == 0 else "" for i, x in enumerate(xs)]

    drawing = Drawing(width, CHART_HEIGHT)
    chart = VerticalBarChart()
    chart.x, chart.y = 40, 35
    chart.width, chart.height = width - 180, CHART_HEIGHT - 50
    chart.data = [[data.totals[x][i] for x in xs] for i in range(len(chart_spec.series))] or [[0]]
    chart.categoryAxis.categoryNames = labels or [""]
    chart.categoryAxis.labels.fontSize = 6
    chart.categoryAxis.labels.angle = 30
    chart.categoryAxis.labels.boxAnchor = "ne"
    if chart_spec.stacked:
        chart.categoryAxis.style = "stacked"
    chart.valueAxis.valueMin = 0
    chart.valueAxis.labels.fontSize = 6
    chart.barSpacing = 0
    chart.groupSpacing = 1 if len(xs) > 60 else 3
    chart.bars.strokeWidth = 0
    names = [chart_spec.labels.get(key, key.replace("_", " ")) for key in chart_spec.series]
    for i in range(len(names)):
        chart.bars[i].fillColor = PALETTE[i % len(PALETTE)]
    drawing.add(chart)

    legend = Legend()
    legend.x, legend.y = width - 120, CHART_HEIGHT - 20
    legend.fontSize = 7
    legend.alignment = "right"
    legend.colorNamePairs = [(PALETTE[i % len(PALETTE)], name) for i, name in enumerate(names)]
    drawing.add(legend)
    return drawing


def _column_widths(columns: Sequence[Column], body_width: float) -> list[float]:
    """Widths in proportion to Column.width, but never narrower than the
    heading's longest word, so no heading breaks inside a word."""
    minimum = [
        max(stringWidth(word, "Helvetica-Bold", FONT_SIZE) for word in column.heading.split() or [""])
        + 2 * CELL_PADDING
        for column in columns
    ]
    total = sum(column.width for column in columns)
    narrow = {i for i, column in enumerate(columns) if body_width * column.width / total < minimum[i]}
    spare = body_width - sum(minimum[i] for i in narrow)
    rest = sum(column.width for i, column in enumerate(columns) if i not in narrow) or 1
    return [minimum[i] if i in narrow else spare * column.width / rest for i, column in enumerate(columns)]


def write(path: Path, document: Document, rows: Iterable[Sequence]) -> None:
    limit = settings.REPORTS_PDF_MAX_ROWS
    tz = document.tz
    keys = [column.key for column in document.columns]
    charts = [_ChartData(chart, keys) for chart in document.charts]

    body_width = PAGE[0] - 2 * MARGIN
    col_widths = _column_widths(document.columns, body_width)
    max_chars = [max(4, int((width - 2 * CELL_PADDING) / CHAR_WIDTH)) for width in col_widths]
    styles = getSampleStyleSheet()
    heading = ParagraphStyle("heading", fontName="Helvetica-Bold", fontSize=FONT_SIZE, leading=FONT_SIZE * 1.2)

    # Headings wrap (a dozen paragraphs); data cells are clipped strings,
    # since thousands of paragraphs would take reportlab seconds each page.
    table = [[Paragraph(escape(column.heading), heading) for column in document.columns]]
    count = 0
    numeric: set[int] = set()
    for row in rows:
        count += 1
        if count == 1:
            numeric = {
                i for i, value in enumerate(row) if isinstance(value, (int, float)) and not isinstance(value, bool)
            }
        for chart in charts:
            chart.add(row)
        if count <= limit:
            table.append([_clip(_text(value, tz), chars) for value, chars in zip(row, max_chars, strict=True)])

    generated = timezone.now().astimezone(tz).strftime("%Y-%m-%d %H:%M %Z")
    story = [
        Paragraph(escape(document.title), styles["Title"]),
        Paragraph(escape(document.subtitle or "No parameters."), styles["Normal"]),
        Paragraph(f"{count:,} rows. Generated {escape(generated)}.", styles["Normal"]),
    ]
    if count > limit:
        story.append(
            Paragraph(
                f"The table shows the first {limit:,} of {count:,} rows; CSV and XLSX have every row.", styles["Normal"]
            )
        )
    for chart in charts:
        story += [
            Spacer(1, 8),
            Paragraph(escape(chart.chart.title), styles["Heading3"]),
            _chart_drawing(chart, body_width, tz),
        ]
    story.append(Spacer(1, 8))
    grid = LongTable(table, colWidths=col_widths, repeatRows=1)
    grid.setStyle(
        TableStyle(
            [
                ("FONT", (0, 0), (-1, -1), "Helvetica", FONT_SIZE),
                ("FONT", (0, 0), (-1, 0), "Helvetica-Bold", FONT_SIZE),
                ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e9ecef")),
                ("ROWBACKGROUNDS", (0, 1), (-1, -1), [colors.white, colors.HexColor("#f8f9fa")]),
                ("LINEBELOW", (0, 0), (-1, 0), 0.5, colors.grey),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("TOPPADDING", (0, 0), (-1, -1), 1),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 1),
                ("LEFTPADDING", (0, 0), (-1, -1), CELL_PADDING),
                ("RIGHTPADDING", (0, 0), (-1, -1), CELL_PADDING),
                *(("ALIGN", (i, 0), (i, -1), "RIGHT") for i in sorted(numeric)),
            ]
        )
    )
    story.append(grid)

    def footer(canvas, doc) -> None:
        canvas.saveState()
        canvas.setFont("Helvetica", FONT_SIZE)
        canvas.drawRightString(PAGE[0] - MARGIN, MARGIN / 2, f"{document.title} - page {doc.page}")
        canvas.restoreState()

    pdf = SimpleDocTemplate(
        str(path),
        pagesize=PAGE,
        leftMargin=MARGIN,
        rightMargin=MARGIN,
        topMargin=MARGIN,
        bottomMargin=MARGIN,
        title=document.title,
        author="reports",
    )
    pdf.build(story, onFirstPage=footer, onLaterPages=footer)
