"""XLSX with openpyxl's write-only mode: rows stream to a temporary XML file
and are zipped at the end, so memory stays flat whatever the row count."""

import re
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from uuid import UUID

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.cell.cell import ERROR_CODES, ILLEGAL_CHARACTERS_RE
from openpyxl.styles import Font
from openpyxl.utils import get_column_letter

from reports.writers import Document
from reports.writers.cells import FORMULA_TRIGGERS, excel_datetime

# Excel's limits: rows per sheet (the header takes one), characters per
# cell, characters in a sheet name.
MAX_ROWS_PER_SHEET = 1_048_576
MAX_CELL_CHARS = 32_767
MAX_SHEET_TITLE = 31
_SHEET_TITLE_FORBIDDEN = re.compile(r"[\[\]:*?/\\]")
# Column.width is relative; this makes 1.0 a comfortable text column.
CHARS_PER_WIDTH_UNIT = 14
# A formula trigger or "#" (error codes) first, or a control character
# anywhere: the strings text_cell must look at closely.
_NEEDS_CARE = re.compile("^[#" + re.escape("".join(FORMULA_TRIGGERS)) + "]|" + ILLEGAL_CHARACTERS_RE.pattern)


def _sheet_title(title: str, number: int) -> str:
    base = _SHEET_TITLE_FORBIDDEN.sub(" ", title).strip() or "Report"
    suffix = f" ({number})" if number > 1 else ""
    return base[: MAX_SHEET_TITLE - len(suffix)] + suffix


class _Sheets:
    """The current sheet, and a new one (header repeated) when Excel's row
    limit is reached."""

    def __init__(self, workbook: Workbook, document: Document, rows_per_sheet: int):
        self.workbook = workbook
        self.document = document
        self.rows_per_sheet = rows_per_sheet
        self.number = 0
        self.new_sheet()

    def new_sheet(self) -> None:
        self.number += 1
        self.sheet = sheet = self.workbook.create_sheet(_sheet_title(self.document.title, self.number))
        # Layout must be set before the first row is written.
        sheet.freeze_panes = "A2"
        for index, column in enumerate(self.document.columns, 1):
            sheet.column_dimensions[get_column_letter(index)].width = column.width * CHARS_PER_WIDTH_UNIT
        bold = Font(bold=True)
        header = []
        for column in self.document.columns:
            cell = WriteOnlyCell(sheet, self.text_cell(column.heading))
            cell.font = bold
            header.append(cell)
        sheet.append(header)
        self.room = self.rows_per_sheet - 1

    def text_cell(self, value: str):
        """The value openpyxl should get for a string: cleaned, and a text
        cell with Excel's quote prefix when it would otherwise be a formula
        (or an error code like #N/A)."""
        if _NEEDS_CARE.search(value) is None and len(value) <= MAX_CELL_CHARS:
            return value  # nearly every string: one regex search
        # Control characters are not allowed in XML; they carry no meaning
        # in a report, so they are dropped.
        value = ILLEGAL_CHARACTERS_RE.sub("", value)[:MAX_CELL_CHARS]
        if value.startswith(FORMULA_TRIGGERS) or value in ERROR_CODES:
            cell = WriteOnlyCell(self.sheet, value)
            cell.data_type = "s"
            cell.quotePrefix = True
            return cell
        return value


def write(
    path: Path, document: Document, rows: Iterable[Sequence], *, rows_per_sheet: int = MAX_ROWS_PER_SHEET
) -> None:
    workbook = Workbook(write_only=True)
    sheets = _Sheets(workbook, document, rows_per_sheet)
    tz = document.tz

    def convert(value):
        kind = value.__class__
        if kind is str:
            return sheets.text_cell(value)
        if value is None or kind is int or kind is float or kind is bool or kind is Decimal:
            return value
        if kind is datetime:
            return excel_datetime(value, tz)
        if kind is timedelta:
            return value.total_seconds()
        if kind is UUID:
            return str(value)  # hex and hyphens: nothing to neutralise
        if hasattr(value, "isoformat"):  # date, time
            return value
        return sheets.text_cell(str(value))

    for row in rows:
        if not sheets.room:
            sheets.new_sheet()
        sheets.sheet.append([convert(value) for value in row])
        sheets.room -= 1
    workbook.save(path)
