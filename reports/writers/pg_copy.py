"""CSV on PostgreSQL, written by the database: the report's own query run as
COPY (...) TO STDOUT WITH CSV and streamed to the file as it comes.

Fetching rows into Python objects and formatting them again costs about ten
times what the database's own CSV costs (bench/reports.py: Python's bare
csv.writer over the same chunked queryset is already ~10x COPY). So a
QuerySet's CSV is made here, with an outer SELECT that gives the cells the
Python writer would: formula-like text neutralised, numbers untouched,
times ISO 8601 in the project's zone, durations in seconds. Memory is
flat: COPY sends one message per row and nothing is held.
"""

import codecs
import csv
import io
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import psycopg
from django.db import connections
from django.db.models import QuerySet
from psycopg.postgres import types as pg_types

from reports.registry import Column
from reports.writers import Document
from reports.writers.cells import neutralise
from upstream.django_db import compiled_sql, selected_names, values_shape

NUMBER_TYPES = {"int2", "int4", "int8", "float4", "float8", "numeric", "oid"}
# The same shape as datetime.isoformat(timespec="microseconds").
TIMESTAMPTZ_FORMAT = 'YYYY-MM-DD"T"HH24:MI:SS.USTZH:TZM'
TIMESTAMP_FORMAT = 'YYYY-MM-DD"T"HH24:MI:SS.US'
ROWS_PER_WRITE = 1000
# reports.writers.cells.FORMULA_TRIGGERS, as SQL literals.
TRIGGERS_SQL = "'=', '+', '-', '@', E'\\t', E'\\r'"


class Counted(Protocol):
    def __call__(self, rows: Iterable, *, live: bool) -> Iterator: ...


@dataclass(frozen=True)
class CopyPlan:
    using: str
    statement: str
    params: tuple


def _cell(column: str, type_name: str) -> str:
    """The SQL for one cell, by the column's PostgreSQL type."""
    if type_name in NUMBER_TYPES:
        return column
    if type_name == "timestamptz":
        return f"to_char({column}, '{TIMESTAMPTZ_FORMAT}')"
    if type_name == "timestamp":
        return f"to_char({column}, '{TIMESTAMP_FORMAT}')"
    if type_name == "date":
        return f"to_char({column}, 'YYYY-MM-DD')"
    if type_name == "interval":
        return f"EXTRACT(EPOCH FROM {column})::double precision"
    if type_name == "bool":
        return f"CASE WHEN {column} THEN 'True' WHEN NOT {column} THEN 'False' END"
    if type_name == "jsonb":
        # As Django decodes it: a number is a number, a string its text,
        # null nothing, anything else its JSON.
        string = column + " #>> '{}'"
        return (
            f"CASE jsonb_typeof({column}) WHEN 'number' THEN {column}::text WHEN 'null' THEN NULL "
            f"WHEN 'boolean' THEN CASE WHEN {column} = 'true'::jsonb THEN 'True' ELSE 'False' END "
            f"WHEN 'string' THEN {_neutralised(f'({string})')} ELSE {_neutralised(f'{column}::text')} END"
        )
    return _neutralised(f"{column}::text")


def _neutralised(text: str) -> str:
    # NULLIF: COPY quotes an empty string ("") to tell it from NULL; the
    # Python writer writes nothing for both.
    return f"NULLIF(CASE WHEN left({text}, 1) IN ({TRIGGERS_SQL}) THEN '''' || {text} ELSE {text} END, '')"


def _selected(queryset: QuerySet, columns: Sequence[Column]) -> list[str] | None:
    """Which SQL columns, in what order, make the report's columns: all of
    them for values_list() (its tuples are the SQL row), by key for
    values(). None when they do not match."""
    shape = values_shape(queryset)
    names = selected_names(queryset)
    if shape == "tuple":
        wanted = names
    elif shape == "dict":
        wanted = [column.key for column in columns]
    else:
        return None
    if len(wanted) != len(columns) or not set(wanted) <= set(names):
        return None
    return wanted


def copy_plan(queryset: Iterable, columns: Sequence[Column]) -> CopyPlan | None:
    """The COPY statement for a values QuerySet on PostgreSQL; None when the
    rows are not one (an iterator, another database), for the Python path."""
    if not isinstance(queryset, QuerySet) or connections[queryset.db].vendor != "postgresql":
        return None
    wanted = _selected(queryset, columns)
    if wanted is None:
        return None
    names = selected_names(queryset)
    compiled = compiled_sql(queryset)
    if compiled is None:
        return None
    sql, params = compiled
    aliases = ", ".join(f"c{index}" for index in range(len(names)))
    with connections[queryset.db].cursor() as cursor:
        # The result's types, without running the query.
        cursor.execute(f"SELECT * FROM ({sql}) AS q({aliases}) LIMIT 0", params)
        type_names = [getattr(pg_types.get(column.type_code), "name", "text") for column in cursor.description]
    cells = ", ".join(_cell(f"q.c{names.index(name)}", type_names[names.index(name)]) for name in wanted)
    statement = f"COPY (SELECT {cells} FROM ({sql}) AS q({aliases})) TO STDOUT WITH (FORMAT csv)"
    return CopyPlan(using=queryset.db, statement=statement, params=tuple(params))


def write(path: Path, document: Document, plan: CopyPlan, counted: Counted) -> None:
    """Run the plan into `path`: BOM, header, then the rows as COPY sends
    them. `counted(rows, live=...)` wraps the row messages (one per row) to
    count them, and with live=True to report progress as they come."""
    header = io.StringIO()
    csv.writer(header).writerow([neutralise(column.heading) for column in document.columns])
    head = codecs.BOM_UTF8 + header.getvalue().encode()
    zone = getattr(document.tz, "key", None) or document.tz.tzname(None)
    connection = connections[plan.using]
    if connection.in_atomic_block:
        # A second connection could not see this transaction's uncommitted
        # rows (a caller's atomic block, a test): COPY on this one. Nothing
        # else can run on a connection while it streams a COPY, so progress
        # waits until the end.
        with connection.cursor() as cursor:
            _copy(cursor.cursor, plan, path, head, zone, lambda rows: counted(rows, live=False))
            # set_config(..., true) lasts until the caller's transaction
            # ends: put the connection's own zone back now.
            cursor.execute("SELECT set_config('TimeZone', %s, true)", [connection.timezone_name])
        return
    # A connection of its own, so the job's progress can be written on
    # Django's while the rows stream (a worker runs in autocommit: every
    # committed row is visible to it).
    # Its errors become Django's (OperationalError and so on), which the
    # task retries like any other lost connection.
    params = {**connection.get_connection_params(), "cursor_factory": psycopg.ClientCursor}
    with connection.wrap_database_errors, psycopg.connect(**params) as own, own.cursor() as cursor:
        _copy(cursor, plan, path, head, zone, lambda rows: counted(rows, live=True))


def _copy(cursor, plan: CopyPlan, path: Path, head: bytes, zone: str, counted: Callable[[Iterable], Iterator]) -> None:
    # For this transaction only: to_char's offsets in the project's zone,
    # floats in their shortest exact form (as Python's repr).
    cursor.execute("SELECT set_config('TimeZone', %s, true), set_config('extra_float_digits', '1', true)", [zone])
    with open(path, "wb", buffering=1 << 20) as out:
        out.write(head)
        with cursor.copy(plan.statement, plan.params) as copy:
            # One row per message, ending in LF; RFC 4180 (and the Python
            # writer) end rows with CRLF. A line break inside a quoted value
            # is left as it is, as csv.writer leaves it. Joined a batch at a
            # time: two writes a row cost more than the COPY itself.
            batch: list = []
            for block in counted(copy):
                batch.append(block[:-1])
                if len(batch) == ROWS_PER_WRITE:
                    out.write(b"\r\n".join(batch) + b"\r\n")
                    batch.clear()
            if batch:
                out.write(b"\r\n".join(batch) + b"\r\n")
