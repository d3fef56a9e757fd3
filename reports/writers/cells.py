"""Cell values for spreadsheets: formula neutralisation and plain types.

A spreadsheet runs a cell that starts with =, +, - or @ as a formula, and
tab or CR can smuggle one past a naive check (OWASP "CSV injection"). Text
from the database (an error message, a task name) is untrusted, so every
such string is neutralised: CSV gets a leading apostrophe, XLSX a text cell
with Excel's quote prefix. Numbers are never touched: -5 stays a number.
"""

import json
from datetime import date, datetime, timedelta, tzinfo
from decimal import Decimal
from uuid import UUID

FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def is_formula_like(text: str) -> bool:
    return text.startswith(FORMULA_TRIGGERS)


def neutralise(text: str) -> str:
    """The CSV form: a leading apostrophe, which spreadsheets show as text."""
    return "'" + text if text.startswith(FORMULA_TRIGGERS) else text


def csv_converter(tz: tzinfo):
    """value -> what csv.writer should write. Dispatch on the exact class,
    most common first: this runs once per cell of a million-row export."""

    def convert(value):
        kind = value.__class__
        if kind is str:
            return "'" + value if value.startswith(FORMULA_TRIGGERS) else value
        if kind is float:
            # 2.0 as "2", as PostgreSQL writes it (reports.writers.pg_copy);
            # past 1e15 both switch to exponents, each its own way.
            return int(value) if value.is_integer() and -1e15 < value < 1e15 else value
        if value is None or kind is int or kind is bool or kind is Decimal:
            return value
        if kind is datetime:
            # Microseconds always, so every time has the same shape (and the
            # same as PostgreSQL's to_char in reports.writers.pg_copy).
            return (value.astimezone(tz) if value.tzinfo else value).isoformat(timespec="microseconds")
        if kind is timedelta:
            return value.total_seconds()
        if kind is date:
            return value.isoformat()
        if kind is UUID:
            return str(value)
        if kind is dict or kind is list:
            return neutralise(json.dumps(value, ensure_ascii=False))
        return neutralise(str(value))

    return convert


def excel_datetime(value: datetime, tz: tzinfo) -> datetime:
    """Excel has no time zones: the local time in the report's zone."""
    return value.astimezone(tz).replace(tzinfo=None) if value.tzinfo else value
