"""Nothing stops the queue: a PENDING row that can never be published fails
on its own, with its reason on the Job, and the relay publishes the rest."""

import pytest

from jobs.models import Job, JobStatus
from jobs.publishing import outbox_relay

pytestmark = pytest.mark.integration

BAD_ROWS = {
    "task gone": ({"task_name": "jobs.removed_long_ago"}, "no task named 'jobs.removed_long_ago'"),
    "extra argument": ({"task_name": "jobs.noop", "args": [1, 2]}, "arguments no longer fit jobs.noop"),
    "unknown keyword": ({"task_name": "jobs.sleep", "kwargs": {"minutes": 3}}, "arguments no longer fit jobs.sleep"),
    "args not a list": ({"task_name": "jobs.noop", "args": 7}, "arguments no longer fit"),
    "queue gone": ({"task_name": "jobs.noop", "queue": "retired"}, "'retired' is not a valid Queue"),
}


def test_bad_rows_fail_each_with_its_reason_and_the_rest_are_published(broker, transactional_db):
    good_before = Job.objects.create(task_name="jobs.noop", queue="default")
    bad = {what: Job.objects.create(**{"queue": "default", **fields}) for what, (fields, _) in BAD_ROWS.items()}
    good_after = [Job.objects.create(task_name="jobs.noop", queue="default") for _ in range(3)]

    # A batch smaller than the bad rows: the relay must get past them.
    assert outbox_relay(grace_seconds=0, batch_size=2) == 4

    for what, job in bad.items():
        job.refresh_from_db()
        assert job.status == JobStatus.FAILURE, what
        assert BAD_ROWS[what][1] in job.error, (what, job.error)
        assert job.finished_at is not None
    for job in [good_before, *good_after]:
        job.refresh_from_db()
        assert job.status == JobStatus.QUEUED
    assert outbox_relay(grace_seconds=0) == 0
