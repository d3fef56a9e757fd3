"""SQL the ORM does not have: seconds between two timestamps, and
percentiles (PostgreSQL's percentile_cont, with the same arithmetic in
Python for SQLite, the embedded default)."""

import math
from collections.abc import Sequence
from itertools import groupby

from django.conf import settings
from django.db import NotSupportedError
from django.db.models import Aggregate, Expression, FloatField, Func, QuerySet


class SecondsBetween(Func):
    """Seconds from `start` to `end` (a float); NULL when either is NULL."""

    output_field = FloatField()

    def __init__(self, start, end, **extra):
        super().__init__(end, start, **extra)

    def _compiled(self, compiler):
        end, end_params = compiler.compile(self.source_expressions[0])
        start, start_params = compiler.compile(self.source_expressions[1])
        return end, start, [*end_params, *start_params]

    def as_postgresql(self, compiler, connection, **extra):
        end, start, params = self._compiled(compiler)
        # EXTRACT gives numeric since PostgreSQL 14; the cast keeps it a
        # float in Python (no Decimal per row).
        return f"EXTRACT(EPOCH FROM ({end} - {start}))::double precision", params

    def as_sqlite(self, compiler, connection, **extra):
        end, start, params = self._compiled(compiler)
        # Django stores datetimes as ISO text. A julianday is a double that
        # resolves about 40 us at today's dates, so the difference is
        # rounded to the millisecond rather than showing the noise.
        return f"ROUND((julianday({end}) - julianday({start})) * 86400.0, 3)", params

    def as_sql(self, compiler, connection, **extra):
        raise NotSupportedError(f"SecondsBetween is written for PostgreSQL and SQLite, not {connection.vendor}.")


class PercentileCont(Aggregate):
    """PostgreSQL's percentile_cont(fraction) WITHIN GROUP (ORDER BY value):
    the value below which `fraction` of the group lies, interpolated."""

    function = "PERCENTILE_CONT"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()

    def __init__(self, expression, fraction: float, **extra):
        if not 0 <= fraction <= 1:
            raise ValueError(f"fraction must be between 0 and 1, not {fraction}")
        super().__init__(expression, fraction=float(fraction), **extra)

    def as_sql(self, compiler, connection, **extra):
        if connection.vendor != "postgresql":
            raise NotSupportedError("PercentileCont needs PostgreSQL; use grouped_percentiles elsewhere.")
        return super().as_sql(compiler, connection, **extra)


def percentile_cont(ordered: Sequence[float], fraction: float) -> float | None:
    """What percentile_cont returns, for values already sorted."""
    if not ordered:
        return None
    position = fraction * (len(ordered) - 1)
    lower = math.floor(position)
    upper = min(lower + 1, len(ordered) - 1)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower)


def grouped_percentiles(
    queryset: QuerySet, *, group_by: Sequence[str], value: Expression, fractions: Sequence[float]
) -> dict[tuple, list[float | None]]:
    """{group: [percentile for each fraction]} without percentile_cont.

    The database sorts; Python reads the values in order and holds one
    group's at a time (a group is a task in one hour or day), so memory
    follows the largest group, not the table.
    """
    ordered = (
        queryset.annotate(_value=value)
        .filter(_value__isnull=False)
        .order_by(*group_by, "_value")
        .values_list(*group_by, "_value")
    )
    width = len(group_by)
    result: dict[tuple, list[float | None]] = {}
    rows = ordered.iterator(chunk_size=settings.REPORTS_CHUNK_SIZE)
    for key, group in groupby(rows, key=lambda row: row[:width]):
        values = [row[width] for row in group]
        result[key] = [percentile_cont(values, fraction) for fraction in fractions]
    return result
