"""Searching jobs by what a person remembers of them: a word of the error,
an argument (an id, an address, a file name), part of the task name, or the
first characters of the job id.

On PostgreSQL the text searched is covered by a trigram GIN index
(migration 0002, `job_search_trgm`), so `LIKE '%word%'` over a million jobs
reads the index instead of every row. The index is built on exactly the
expression below: the query and the index must compile to the same SQL for
PostgreSQL to use it. SQLite has no such index and scans; its tables are
small (the embedded default).
"""

import uuid

from django.db.models import F, Func, Q, QuerySet, TextField
from django.db.models.functions import Cast

SEARCH_INDEX_NAME = "job_search_trgm"
# Shorter terms have no trigram: PostgreSQL would read the whole index.
MIN_INDEXED_TERM_LENGTH = 3


class JobSearchText(Func):
    """UPPER(task_name || ' ' || error || ' ' || args::text || ' ' ||
    kwargs::text): every column is NOT NULL, and the SQL has no parameters,
    so the index expression and the query's are the same text."""

    template = "UPPER(%(expressions)s)"
    arg_joiner = " || ' ' || "
    output_field = TextField()

    def __init__(self):
        super().__init__(
            F("task_name"),
            F("error"),
            Cast("args", output_field=TextField()),
            Cast("kwargs", output_field=TextField()),
        )


def _id_prefix_range(term: str) -> Q | None:
    """A job id's first characters (the list shows 8) as a range of the
    primary key, which its index answers; None if `term` is not hex."""
    digits = term.replace("-", "").lower()
    if len(digits) < 4 or len(digits) > 32 or any(char not in "0123456789abcdef" for char in digits):
        return None
    return Q(pk__gte=uuid.UUID(digits.ljust(32, "0")), pk__lte=uuid.UUID(digits.ljust(32, "f")))


def jobs_search(jobs: QuerySet, term: str) -> QuerySet:
    """The jobs among `jobs` whose id is `term`, whose id starts with it, or
    whose task name, error or arguments contain it (case-insensitive)."""
    term = term.strip()
    if not term:
        return jobs
    try:
        return jobs.filter(pk=uuid.UUID(term))
    except ValueError:
        pass
    matches = Q(search_text__contains=term.upper())
    if (id_range := _id_prefix_range(term)) is not None:
        matches |= id_range
    return jobs.alias(search_text=JobSearchText()).filter(matches)
