"""Generated files, opened the way their users' tools open them."""

import csv
from pathlib import Path

import openpyxl
from pypdf import PdfReader


def csv_rows(path: Path) -> list[list[str]]:
    # utf-8-sig: the file starts with a byte-order mark (for Excel).
    with open(path, encoding="utf-8-sig", newline="") as file:
        return list(csv.reader(file))


def xlsx_sheets(path: Path) -> dict[str, list[tuple]]:
    workbook = openpyxl.load_workbook(path)
    return {sheet.title: list(sheet.iter_rows(values_only=True)) for sheet in workbook.worksheets}


def xlsx_cells(path: Path) -> list[list]:
    """The first sheet's cells, with their types and styles."""
    return [list(row) for row in openpyxl.load_workbook(path).worksheets[0].iter_rows()]


def pdf_text(path: Path) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(path).pages)


def pdf_pages(path: Path) -> list:
    return PdfReader(path).pages
