"""One writer per format. Each takes the path of a temporary file, the
document's description and an iterator of rows in column order; it writes
rows as they come, never holding them all (the PDF, a document for people,
keeps at most settings.REPORTS_PDF_MAX_ROWS of them)."""

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import tzinfo
from pathlib import Path

from reports.registry import Chart, Column


@dataclass(frozen=True)
class Document:
    title: str
    subtitle: str  # the parameters, in words
    columns: Sequence[Column]
    charts: Sequence[Chart]
    tz: tzinfo


Writer = Callable[[Path, Document, Iterable[Sequence]], None]

CONTENT_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "pdf": "application/pdf",
}


def writer_for(format: str) -> Writer:
    # Imported here: reportlab and openpyxl are only loaded by processes
    # that write those formats.
    if format == "csv":
        from reports.writers.csv_writer import write
    elif format == "xlsx":
        from reports.writers.xlsx_writer import write
    elif format == "pdf":
        from reports.writers.pdf_writer import write
    else:
        raise ValueError(f"no writer for {format!r}")
    return write
