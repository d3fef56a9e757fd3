"""psycopg: one internal, the conversion of a query and its Python values
into what libpq's PQsendQueryPrepared takes.

Written against psycopg 3.3. The worker's main process sends its batches of
ends without waiting for PostgreSQL's answer (jobs/loop_statement.py), on the
connection's libpq handle (`pgconn`, public); psycopg's public API waits for
every answer, and turning `%s`/`%b` placeholders and values into `$n`
placeholders, bytes, type oids and formats is its private PostgresQuery.
"""

from psycopg import _queries
from psycopg.adapt import Transformer

from upstream import UpstreamChanged

WRITTEN_AGAINST = "3.3"


def libpq_query(connection, sql: str, params: list) -> tuple[bytes, list, list, list]:
    """(query with $n placeholders, values as bytes, their type oids, their
    formats) for `sql` with psycopg placeholders on psycopg `connection`."""
    query_class = getattr(_queries, "PostgresQuery", None)
    if query_class is None:
        raise UpstreamChanged("psycopg", WRITTEN_AGAINST, "psycopg._queries has no PostgresQuery")
    query = query_class(Transformer(connection))
    query.convert(sql, params)
    try:
        return query.query, query.params, query.types, query.formats
    except AttributeError as exc:
        raise UpstreamChanged("psycopg", WRITTEN_AGAINST, f"PostgresQuery has no {exc.name}") from None
