"""A job's start, deferred to its end statement on the common path
(jobs/starts.py), and written as it happens where it matters: a redelivery,
a long job, progress, a worker that missed a cancellation."""

import re
import threading

import pytest
from celery import current_app
from celery.app.trace import build_tracer
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_celery_results.models import TaskResult

from jobs.models import Job, JobStatus
from jobs.queues import MAX_DELIVERIES
from jobs.registry import get_job_task
from jobs.services import enqueue, job_cancel
from tests.helpers import wait_for

WORKER = "deferred@test"


def _queued_job(task_name: str, args=(), **fields) -> Job:
    return Job.objects.create(
        task_name=task_name, args=list(args), status=JobStatus.QUEUED, queued_at=timezone.now(), **fields
    )


def _run_in_this_process(job: Job, *, redelivered: bool = False) -> list[str]:
    """Run the job's task as a worker child does (Celery's tracer, the
    kit's result backend) and return the SQL of the statements that wrote
    its Job row."""
    task = get_job_task(job.task_name)
    tracer = build_tracer(job.task_name, task, eager=False, hostname=WORKER, app=current_app)
    request = {
        "id": str(job.id),
        "task": job.task_name,
        "hostname": WORKER,
        "delivery_info": {"exchange": "", "routing_key": "default", "priority": 5, "redelivered": redelivered},
        "is_eager": False,
        "args": job.args,
        "kwargs": {},
    }
    with CaptureQueriesContext(connection) as queries:
        tracer(str(job.id), job.args, {}, request)
    return [query["sql"] for query in queries if "jobs_job" in query["sql"] and re.search(r"\bSET\b", query["sql"])]


@pytest.fixture
def deferred(settings):
    settings.JOBS_START_RECORD_DELAY_MS = 500


def test_a_job_that_ends_quickly_is_tracked_by_one_statement_carrying_its_start(transactional_db, deferred):
    job = _queued_job("jobs.noop")

    writes = _run_in_this_process(job)

    assert len(writes) == 1, writes
    job.refresh_from_db()
    assert (job.status, job.deliveries, job.attempts, job.worker) == (JobStatus.SUCCESS, 1, 1, WORKER)
    assert job.queued_at <= job.started_at <= job.finished_at
    assert TaskResult.objects.get(task_id=str(job.id)).status == "SUCCESS"


def test_a_job_started_before_its_publisher_marked_it_queued_is_queued_when_it_started(transactional_db, deferred):
    job = Job.objects.create(task_name="jobs.noop", status=JobStatus.PENDING)

    _run_in_this_process(job)

    job.refresh_from_db()
    assert job.status == JobStatus.SUCCESS
    assert job.queued_at == job.started_at


def test_a_failure_carries_the_start_too(transactional_db, deferred):
    job = _queued_job("testapp.fail_with", ["broken on purpose"])

    writes = _run_in_this_process(job)

    assert len(writes) == 1, writes
    job.refresh_from_db()
    assert (job.status, job.deliveries, job.attempts) == (JobStatus.FAILURE, 1, 1)
    assert job.started_at <= job.finished_at
    assert "broken on purpose" in job.error


def test_a_redelivered_message_counts_its_delivery_before_it_runs(transactional_db, deferred):
    # Its worker died, or handed it back: it is started (with the poison
    # check) before it runs, not with its end.
    job = _queued_job("jobs.noop", deliveries=1, attempts=1)

    writes = _run_in_this_process(job, redelivered=True)

    assert len(writes) == 2, writes
    assert "RETURNING" in writes[0].upper()  # jobs.tracking.job_mark_started
    job.refresh_from_db()
    assert (job.status, job.deliveries, job.attempts) == (JobStatus.SUCCESS, 2, 2)


def test_a_redelivered_message_of_a_job_that_used_up_its_deliveries_is_dead_without_running(
    transactional_db, deferred, tmp_path
):
    marker = tmp_path / "ran"
    job = _queued_job("testapp.block", [0, str(marker)], deliveries=MAX_DELIVERIES, attempts=MAX_DELIVERIES)

    _run_in_this_process(job, redelivered=True)

    job.refresh_from_db()
    assert (job.status, job.deliveries) == (JobStatus.DEAD, MAX_DELIVERIES + 1)
    assert not marker.exists()


def test_a_redelivered_copy_of_a_finished_job_does_not_run_again(transactional_db, deferred, tmp_path):
    marker = tmp_path / "ran"
    job = _queued_job("testapp.block", [0, str(marker)])
    _run_in_this_process(job)
    marker.unlink()

    _run_in_this_process(job, redelivered=True)

    job.refresh_from_db()
    assert (job.status, job.attempts) == (JobStatus.SUCCESS, 1)
    assert not marker.exists()


def test_with_no_delay_every_start_is_written_as_the_job_begins(transactional_db, settings):
    settings.JOBS_START_RECORD_DELAY_MS = 0
    job = _queued_job("jobs.noop")

    writes = _run_in_this_process(job)

    assert len(writes) == 2, writes
    job.refresh_from_db()
    assert (job.status, job.deliveries, job.attempts) == (JobStatus.SUCCESS, 1, 1)


def test_a_job_running_past_the_delay_shows_started_while_it_runs_and_is_counted_once(
    transactional_db, settings, tmp_path
):
    settings.JOBS_START_RECORD_DELAY_MS = 100
    marker = tmp_path / "running"
    job = _queued_job("testapp.block", [3, str(marker)])
    seen_while_running = []

    def watch():
        wait_for(marker.exists, what="the job to begin")
        wait_for(
            lambda: Job.objects.filter(pk=job.pk, status=JobStatus.STARTED).exists(),
            timeout=10,
            what="the job to show as STARTED while it runs",
        )
        seen_while_running.append(Job.objects.values_list("deliveries", "worker").get(pk=job.pk))

    watcher = threading.Thread(target=watch)
    watcher.start()
    _run_in_this_process(job)
    watcher.join()

    assert seen_while_running == [(1, WORKER)]
    job.refresh_from_db()
    assert (job.status, job.deliveries, job.attempts) == (JobStatus.SUCCESS, 1, 1)
    assert job.started_at <= job.finished_at


@pytest.mark.integration
def test_a_worker_that_was_down_when_jobs_were_cancelled_does_not_run_them(start_worker, tmp_path):
    """The revoke broadcast reached no worker: the one that starts later
    reads the cancellations from the database before taking a message."""
    markers = [tmp_path / f"cancelled-{number}" for number in range(3)]
    cancelled = [enqueue("testapp.block", 0, str(marker)) for marker in markers]
    for job in cancelled:
        assert job_cancel(job=job)

    start_worker()
    later = enqueue("jobs.noop")
    wait_for(lambda: Job.objects.get(pk=later.pk).status == JobStatus.SUCCESS, timeout=30, what="a later job to run")

    assert not any(marker.exists() for marker in markers)
    for job in cancelled:
        job.refresh_from_db()
        assert (job.status, job.started_at) == (JobStatus.REVOKED, None)
