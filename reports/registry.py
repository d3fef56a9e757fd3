"""Report types: what a report takes, which rows it has, which columns.

One declaration serves CSV, XLSX and PDF:

    from reports.params import DateRange
    from reports.registry import Column, ReportType, register

    @register
    class Signups(ReportType):
        name = "accounts.signups"
        title = "Sign-ups"
        params = {"period": DateRange(max_days=92)}
        columns = [Column("username", "User"), Column("date_joined", "Joined")]

        def rows(self, params):
            period = params["period"]
            return User.objects.filter(date_joined__gte=period.start, date_joined__lt=period.end)

Put it in `<app>/report_types.py`: every process imports those at start
(reports.apps). `rows()` returns a QuerySet (of models, `.values()` or
`.values_list()`), read in chunks by the service, or any iterable of tuples
in column order or of dicts keyed by column key.
"""

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db.models import QuerySet

from reports.params import InvalidParams, Param, clean_params
from upstream.django_db import yields_models

FORMATS = ("csv", "xlsx", "pdf")


@dataclass(frozen=True)
class Column:
    """`key` names the value in a row; `source` is the ORM path read from a
    QuerySet of models (defaults to key); `width` is a relative width for
    the PDF table and, times four, characters in XLSX."""

    key: str
    label: str = ""
    source: str = ""
    width: float = 1.0

    @property
    def heading(self) -> str:
        return self.label or self.key.replace("_", " ").capitalize()

    @property
    def path(self) -> str:
        return self.source or self.key


@dataclass(frozen=True)
class Chart:
    """A bar chart in the PDF: one bar per distinct `x` value, each series
    (a numeric column) summed over the rows that share it, stacked."""

    title: str
    x: str
    series: Sequence[str]
    stacked: bool = True
    labels: dict[str, str] = field(default_factory=dict)


class ReportType:
    """A kind of report. Subclass, set the attributes, write rows(), and
    @register it; one instance serves every run of that type."""

    name: str = ""
    title: str = ""
    description: str = ""
    params: dict[str, Param] = {}
    columns: Sequence[Column] = ()
    charts: Sequence[Chart] = ()
    formats: Sequence[str] = FORMATS
    # Needed, besides reports.add_reportrun, to ask for this report: the
    # rows may show what the asker could not otherwise see.
    permission: str | None = None

    def rows(self, params: dict[str, Any]) -> QuerySet | Iterable:
        raise NotImplementedError

    def validate(self, params: dict[str, Any]) -> None:
        """Checks across parameters; raise InvalidParams."""

    def count(self, params: dict[str, Any], rows: QuerySet | Iterable) -> int | None:
        """How many rows there will be, for progress; None if unknown."""
        return rows.count() if isinstance(rows, QuerySet) else None

    # -- Used by the services; not meant to be overridden ---------------------

    def clean(self, raw: Any) -> dict[str, Any]:
        params = clean_params(self.params, raw)
        self.validate(params)
        return params

    def to_json(self, params: dict[str, Any]) -> dict[str, Any]:
        return {name: self.params[name].to_json(value) for name, value in params.items()}

    def describe_params(self, params: dict[str, Any]) -> str:
        parts = []
        for name, value in params.items():
            shown = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
            parts.append(f"{name.replace('_', ' ')}: {shown}")
        return "; ".join(parts)

    def values(self, rows: QuerySet) -> QuerySet:
        """A QuerySet of models as the values of the declared columns."""
        if yields_models(rows):
            return rows.values_list(*(column.path for column in self.columns))
        return rows

    def stream(self, rows: QuerySet | Iterable) -> Iterator[Sequence]:
        """Rows as sequences in column order. A QuerySet is read in chunks
        (a server-side cursor on PostgreSQL), never all at once."""
        if isinstance(rows, QuerySet):
            rows = self.values(rows).iterator(chunk_size=settings.REPORTS_CHUNK_SIZE)
        keys = [column.key for column in self.columns]
        for row in rows:
            if isinstance(row, dict):
                yield [row.get(key) for key in keys]
            else:
                yield row


_REGISTRY: dict[str, ReportType] = {}


def _path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def register(cls: type[ReportType]) -> type[ReportType]:
    """Class decorator: make the report type available by its name."""
    if not cls.name or not cls.columns:
        raise ImproperlyConfigured(f"{cls.__qualname__} needs a name and columns.")
    unknown = set(cls.formats) - set(FORMATS)
    if unknown:
        raise ImproperlyConfigured(f"{cls.__qualname__}: unknown formats {sorted(unknown)}; use {FORMATS}.")
    existing = _REGISTRY.get(cls.name)
    # The same class imported twice (autodiscovery, then a test) is fine; a
    # second class claiming the name is a mistake that would swap reports.
    if existing is not None and _path(type(existing)) != _path(cls):
        raise ImproperlyConfigured(
            f"Two report types are named {cls.name!r}: {type(existing).__qualname__} and {cls.__qualname__}."
        )
    _REGISTRY[cls.name] = cls()
    return cls


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


def report_types() -> dict[str, ReportType]:
    return dict(sorted(_REGISTRY.items()))


def get_report_type(name: str) -> ReportType:
    report = _REGISTRY.get(name)
    if report is None:
        available = ", ".join(sorted(_REGISTRY)) or "none"
        raise InvalidParams({"type": f"unknown report type {name!r}; available: {available}"})
    return report
