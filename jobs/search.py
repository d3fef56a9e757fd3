"""Searching jobs by what a person remembers of them: a word of the error,
an argument (an id, an address, a file name), part of the task name, or the
first characters of the job id.

On PostgreSQL the text searched is covered by a trigram GIN index
(migration 0002, `job_search_trgm`), so `LIKE '%word%'` over a million jobs
reads the index instead of every row. The index is built on exactly the
expression below: the query and the index must compile to the same SQL for
PostgreSQL to use it. SQLite has no such index and scans; its tables are
small (the embedded default).

A term that many jobs hold (a word of a common error) is the other way
round: no index makes reading all its rows cheap, and a person wants the
newest of them, not how many there are to the unit. Its search is written
so that PostgreSQL cannot ask the trigram index (STRPOS, which no index
answers) and walks the created_at index newest first, stopping once it has
a page; the list's count stops at SEARCH_COUNT_LIMIT (CappedCountPaginator)
and says "more than" beyond it.
"""

import re
import uuid
from functools import cached_property

from django.core.paginator import Paginator
from django.db import connections
from django.db.models import Count, F, Func, Q, QuerySet, TextField, Value
from django.db.models.functions import Cast, StrIndex

SEARCH_INDEX_NAME = "job_search_trgm"
# Shorter terms have no trigram: PostgreSQL would read the whole index.
MIN_INDEXED_TERM_LENGTH = 3
# A word of the term stands in for it in the index only if at most this
# many jobs contain the word (see _index_probe); a term that more hold
# is searched newest first, without the index (see jobs_search).
PROBE_CANDIDATE_LIMIT = 2000
# A search's count stops here: beyond it the list says "more than 1,000"
# (ten pages of 100), which is all a person reads before narrowing down.
SEARCH_COUNT_LIMIT = 1000


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
    length; a word that turns out common is not used (_candidates)."""
    words = [word for word in _TOKEN.findall(term) if len(word) >= MIN_INDEXED_TERM_LENGTH]
    if not words:
        return term
    return max(words, key=lambda word: (sum(char.isdigit() for char in word), len(word)))


def _candidates(jobs: QuerySet, probe: str, term: str) -> tuple[int, int]:
    """How many jobs contain `probe`, counting to PROBE_CANDIDATE_LIMIT + 1
    only, and how many of those contain the whole `term`: one query over
    the index, costing what the probe's own trigrams cost (little, for a
    distinctive word; the length of their posting lists for a common one)."""
    matching = jobs.model.objects.using(jobs.db).alias(search_text=JobSearchText())
    matching = matching.filter(search_text__contains=probe.upper()).order_by()
    matching = matching.annotate(term_position=StrIndex(JobSearchText(), Value(term.upper())))
    counted = matching[: PROBE_CANDIDATE_LIMIT + 1].aggregate(
        candidates=Count("pk"), holding_term=Count("pk", filter=Q(term_position__gt=0))
    )
    return counted["candidates"], counted["holding_term"]


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
    id_range = _id_prefix_range(term)
    if connections[jobs.db].vendor != "postgresql":
        # No index to spare (SQLite): the whole term, on every row.
        return _matching(jobs, term, term, id_range)
    probe = _index_probe(term)
    candidates, holding_term = _candidates(jobs, probe, term)
    if candidates <= PROBE_CANDIDATE_LIMIT:
        return _matching(jobs, probe, term, id_range)
    if holding_term * 2 <= candidates:
        # A common word, but the term is in at most half of the rows that
        # hold it: the index on the whole term reads a fraction of them.
        return _matching(jobs, term, term, id_range)
    # Thousands of jobs hold the term: reading them all through the index
    # cost a million-job search 2 s (30,000 heap blocks, for the count and
    # again for the page). Without an indexable condition PostgreSQL walks
    # created_at newest first and stops at a page (about 1,500 rows for a
    # term that one job in fifteen holds) and the count at its limit; the
    # walk reads further when the term's matches are sparse or old.
    matches = Q(term_position__gt=0)
    if id_range is not None:
        matches |= id_range
    return jobs.alias(term_position=StrIndex(JobSearchText(), Value(term.upper()))).filter(matches)


def _matching(jobs: QuerySet, probe: str, term: str, id_range: Q | None) -> QuerySet:
    """The jobs holding `probe` (which the trigram index answers), checked
    for the whole `term` when `probe` is only a word of it."""
    matches = Q(search_text__contains=probe.upper())
    if probe != term:
        matches &= Q(term_position__gt=0)
        jobs = jobs.alias(term_position=StrIndex(JobSearchText(), Value(term.upper())))
    if id_range is not None:
        matches |= id_range
    return jobs.alias(search_text=JobSearchText()).filter(matches)


class CappedCountPaginator(Paginator):
    """A paginator whose count stops at `count_limit` (`count_capped` says
    whether it did): counting the 66,000 jobs a common word matches read as
    much as listing them all. The count keeps the list's order, so on a
    common term it walks the same newest rows as the first page; jobs
    beyond the limit are reached by narrowing the search or the filters."""

    def __init__(self, object_list, per_page, *args, count_limit: int = SEARCH_COUNT_LIMIT, **kwargs):
        super().__init__(object_list, per_page, *args, **kwargs)
        self.count_limit = count_limit
        self.count_capped = False

    @cached_property
    def count(self) -> int:
        counted = self.object_list[: self.count_limit + 1].count()
        self.count_capped = counted > self.count_limit
        return min(counted, self.count_limit)
