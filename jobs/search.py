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

import re
import uuid

from django.db import connections
from django.db.models import F, Func, Q, QuerySet, TextField, Value
from django.db.models.functions import Cast, StrIndex

SEARCH_INDEX_NAME = "job_search_trgm"
# Shorter terms have no trigram: PostgreSQL would read the whole index.
MIN_INDEXED_TERM_LENGTH = 3
# A word of the term stands in for it in the index only if at most this
# many jobs contain the word (see _index_probe).
PROBE_CANDIDATE_LIMIT = 2000


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


_TOKEN = re.compile(r"[^\W_]+")


def _index_probe(term: str) -> str:
    """The part of `term` the index is asked for: its most distinctive word.

    A trigram index answers LIKE '%term%' by reading the posting list of
    every trigram of the term, and the trigrams that nearly every row holds
    ("EXA", "AMP", "ORG" of e-mail addresses, the JSON keys of a task's
    arguments) have lists as long as the table: on a million jobs those
    lists were most of a search's time. A word of the term finds a superset
    of the rows the term finds; the whole term is then checked on those rows
    only (with STRPOS, which no index answers, so PostgreSQL does not read
    its trigrams too). Digits make a word distinctive (ids, numbers), then
    length; a word that turns out common is not used (_few_candidates)."""
    words = [word for word in _TOKEN.findall(term) if len(word) >= MIN_INDEXED_TERM_LENGTH]
    if not words:
        return term
    return max(words, key=lambda word: (sum(char.isdigit() for char in word), len(word)))


def _few_candidates(jobs: QuerySet, probe: str) -> bool:
    """Whether at most PROBE_CANDIDATE_LIMIT jobs contain `probe`: a count
    that stops there, over the index, costing what the probe's own trigrams
    cost (little, for a distinctive word)."""
    matching = jobs.model.objects.using(jobs.db).alias(search_text=JobSearchText())
    matching = matching.filter(search_text__contains=probe.upper()).order_by()
    return matching[: PROBE_CANDIDATE_LIMIT + 1].count() <= PROBE_CANDIDATE_LIMIT


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
    probe = _index_probe(term)
    if probe != term and not (connections[jobs.db].vendor == "postgresql" and _few_candidates(jobs, probe)):
        probe = term  # no index to spare (SQLite), or the word is common
    matches = Q(search_text__contains=probe.upper())
    if probe != term:
        matches &= Q(term_position__gt=0)
        jobs = jobs.alias(term_position=StrIndex(JobSearchText(), Value(term.upper())))
    if (id_range := _id_prefix_range(term)) is not None:
        matches |= id_range
    return jobs.alias(search_text=JobSearchText()).filter(matches)
