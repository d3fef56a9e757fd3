"""Django: two internals of the database layer and of QuerySet.

Written against Django 5.2 (checked on 6.0 by the Django 6 test run where it
exists). Neither has a public form:
- a connection's `health_check_done` flag, set after a task so that
  CONN_HEALTH_CHECKS does not probe the connection (a round trip) before the
  next task's first statement, which handles a dropped connection itself;
- the SQL, parameters and column names of a values() QuerySet, which the
  PostgreSQL COPY writer (reports/writers/pg_copy.py) wraps in COPY.
"""

from django.core.exceptions import EmptyResultSet
from django.db.models import QuerySet
from django.db.models.query import (
    FlatValuesListIterable,
    ModelIterable,
    NamedValuesListIterable,
    ValuesIterable,
    ValuesListIterable,
)

from upstream import UpstreamChanged

WRITTEN_AGAINST = "5.2"


def skip_next_health_check(connection) -> None:
    """The next use of `connection` skips CONN_HEALTH_CHECKS' probe."""
    if not hasattr(connection, "health_check_done"):
        raise UpstreamChanged("Django", WRITTEN_AGAINST, "database connections have no health_check_done")
    connection.health_check_done = True


def yields_models(queryset: QuerySet) -> bool:
    """True for a QuerySet of model instances (not values() / values_list())."""
    return _iterable_class(queryset) is ModelIterable


def values_shape(queryset: QuerySet) -> str | None:
    """ "dict" for values(), "tuple" for values_list() in any form, None for
    anything else (model instances)."""
    iterable = _iterable_class(queryset)
    if iterable is ValuesIterable:
        return "dict"
    if iterable in (ValuesListIterable, NamedValuesListIterable, FlatValuesListIterable):
        return "tuple"
    return None


def selected_names(queryset: QuerySet) -> list[str]:
    """The query's SQL columns in order, named as Django's values iterables
    name them (ValuesIterable)."""
    query = queryset.query
    try:
        if query.selected:
            return list(query.selected)
        return [*query.extra_select, *query.values_select, *query.annotation_select]
    except AttributeError as exc:
        raise UpstreamChanged("Django", WRITTEN_AGAINST, f"Query has no {exc.name}") from exc


def compiled_sql(queryset: QuerySet) -> tuple[str, tuple] | None:
    """The SQL and parameters the QuerySet would run; None if it can match
    no row (Django then runs nothing)."""
    try:
        sql, params = queryset.query.get_compiler(using=queryset.db).as_sql()
    except EmptyResultSet:
        return None
    return sql, tuple(params)


def _iterable_class(queryset: QuerySet):
    try:
        return queryset._iterable_class
    except AttributeError as exc:
        raise UpstreamChanged("Django", WRITTEN_AGAINST, "QuerySet has no _iterable_class") from exc
