"""Failures as an on-call engineer reads them: which were already retried
or discarded (and so are out of the default views), which can never succeed
(BadInput), what the latest attempt of a retried job is, and failures grouped
by cause (a fingerprint of task, exception type and message).

Plain functions over the Job table; jobs.admin and jobs.api call them.
"""

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from django.db.models import OuterRef, Q, QuerySet, Subquery
from django.utils import timezone

from jobs.models import RETRYABLE_STATUSES, Job, JobStatus

# Failures a group gathers: what ended badly without a person cancelling it.
GROUPED_STATUSES = (JobStatus.FAILURE, JobStatus.DEAD, JobStatus.LOST)
# jobs.tracking.error_summary writes "<exception type>: <message>"; BadInput
# (jobs.exceptions) has no subclasses, so its prefix names every such failure.
BAD_INPUT_PREFIX = "BadInput:"
# The grouping page reads at most this many of the newest open failures: it
# answers in a fraction of a second however many there are, and says when it
# stopped short.
GROUP_SCAN_LIMIT = 20_000
# Bound on a retry chain walked to find a job's latest attempt.
CHAIN_LIMIT = 50


def newest_retry_id() -> Subquery:
    """Per job, the id of its newest retry (None if it was never retried):
    one index probe on retry_of per row."""
    return Subquery(Job.objects.filter(retry_of=OuterRef("pk")).order_by("-created_at").values("pk")[:1])


def superseded() -> Q:
    """Jobs that ended badly and were since retried or discarded: history,
    not work to do."""
    # IN over the retried ids, not a correlated EXISTS: PostgreSQL hashes
    # the (few) retried ids once instead of probing the index for every
    # failure, which was most of the default list's time on a million jobs.
    retried = Q(pk__in=Job.objects.filter(retry_of__isnull=False).values("retry_of"))
    return Q(status__in=RETRYABLE_STATUSES) & (retried | Q(resolved_at__isnull=False))


def bad_input() -> Q:
    return Q(error__startswith=BAD_INPUT_PREFIX)


def latest_attempt(job: Job) -> Job:
    """The newest job of `job`'s retry chain (the job itself if it was never
    retried): what a person means when retrying a job that was retried."""
    if getattr(job, "latest_retry_id", True) is None:  # annotated: no retry
        return job
    latest = job
    for _ in range(CHAIN_LIMIT):
        newer = Job.objects.filter(retry_of=latest).order_by("-created_at").first()
        if newer is None:
            break
        latest = newer
    return latest


# -- Grouping by cause -----------------------------------------------------

_UUID = re.compile(r"\b[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}\b")
_HEX = re.compile(r"\b(?=[0-9a-fA-F]*\d)[0-9a-fA-F]{8,}\b")
_NUMBER = re.compile(r"\d+")


def normalise_message(message: str) -> str:
    """The message with what differs between occurrences of one cause (ids,
    hashes, numbers) replaced by placeholders."""
    message = _UUID.sub("<id>", message)
    message = _HEX.sub("<hex>", message)
    return _NUMBER.sub("<n>", message).strip()


def fingerprint(task_name: str, error: str) -> tuple[str, str, str]:
    """(task, exception type, normalised message) of one failure."""
    exc_type, separator, message = error.partition(":")
    if not separator or " " in exc_type.strip():
        # Not "<Type>: <message>" (the reaper's and the dead-letter's own
        # sentences): the whole text is the message.
        exc_type, message = "", error
    return task_name, exc_type.strip(), normalise_message(message)


def group_key(parts: tuple[str, str, str]) -> str:
    """A short stable name for a fingerprint, for URLs and forms."""
    return hashlib.sha1("\x1f".join(parts).encode()).hexdigest()[:16]


@dataclass
class FailureGroup:
    key: str
    task_name: str
    exc_type: str
    message: str
    count: int = 0
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    example_id: object = None
    example_error: str = ""
    job_ids: list = field(default_factory=list, repr=False)

    @property
    def is_bad_input(self) -> bool:
        return self.exc_type == BAD_INPUT_PREFIX.rstrip(":")


@dataclass
class FailureGroups:
    groups: list[FailureGroup]
    scanned: int
    truncated: bool  # more open failures than GROUP_SCAN_LIMIT exist


def open_failures(jobs: QuerySet | None = None) -> QuerySet:
    """Failed, dead and lost jobs nobody has retried or discarded yet."""
    jobs = Job.objects.all() if jobs is None else jobs
    return jobs.filter(status__in=GROUPED_STATUSES).exclude(superseded())


def failure_groups(jobs: QuerySet | None = None, *, limit: int = GROUP_SCAN_LIMIT) -> FailureGroups:
    """Open failures grouped by fingerprint, the largest group first."""
    # One query per status, each walking the (status, created_at) index
    # backwards and stopping at the limit; one query for all three would
    # read and sort every failure the table holds.
    fields = ("pk", "task_name", "error", "created_at", "finished_at")
    rows = []
    for status in GROUPED_STATUSES:
        newest = open_failures(jobs).filter(status=status).order_by("-created_at")
        rows += newest.values_list(*fields)[: limit + 1]
    rows = sorted(rows, key=lambda row: row[3], reverse=True)[: limit + 1]
    groups: dict[str, FailureGroup] = {}
    scanned = 0
    for pk, task_name, error, created_at, finished_at in rows:
        if scanned == limit:
            return FailureGroups(_ordered(groups), scanned, truncated=True)
        scanned += 1
        parts = fingerprint(task_name, error)
        key = group_key(parts)
        group = groups.get(key)
        if group is None:
            # Newest first: the first row seen is the latest occurrence.
            group = groups[key] = FailureGroup(key, *parts, example_id=pk, example_error=error)
        seen = finished_at or created_at
        group.count += 1
        group.job_ids.append(pk)
        group.last_seen = max(group.last_seen or seen, seen)
        group.first_seen = min(group.first_seen or seen, seen)
    return FailureGroups(_ordered(groups), scanned, truncated=False)


def _ordered(groups: dict[str, FailureGroup]) -> list[FailureGroup]:
    return sorted(groups.values(), key=lambda group: (-group.count, group.task_name, group.message))


def failure_group(key: str, jobs: QuerySet | None = None) -> FailureGroup | None:
    return next((group for group in failure_groups(jobs).groups if group.key == key), None)


def failures_discard(job_ids: Iterable) -> int:
    """Mark failures resolved: they stay as history, out of the default
    views and of every "retry all". Returns how many were marked."""
    return Job.objects.filter(pk__in=list(job_ids), status__in=RETRYABLE_STATUSES, resolved_at__isnull=True).update(
        resolved_at=timezone.now()
    )
