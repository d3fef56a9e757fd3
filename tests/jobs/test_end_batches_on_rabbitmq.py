"""Successful jobs' ends written by the worker's main process, several at a
time, before their messages are acknowledged (jobs/end_batches.py)."""

from datetime import timedelta

import pytest
from celery import current_app
from django.db import connection
from django.utils import timezone
from django_celery_results.models import TaskResult

from jobs import end_batches
from jobs.backend import TrackedDatabaseBackend
from jobs.loop_statement import LoopStatement
from jobs.models import Job, JobStatus
from jobs.queues import Queue
from jobs.services import enqueue
from tests.helpers import wait_for


def ready_messages(queue: str) -> int:
    with current_app.connection_for_write() as conn:
        return conn.default_channel.queue_declare(queue, passive=True).message_count


def _queued_job() -> Job:
    return Job.objects.create(task_name="jobs.noop", status=JobStatus.QUEUED, queued_at=timezone.now())


# What an array literal would have to quote: the batch's columns travel as
# arrays (jobs.tracking.job_successes_sql).
AWKWARD_TEXT = 'a, {b} "c" \\ NULL é'


@pytest.mark.parametrize("count", [1, 3, 16])
def test_the_ends_of_several_jobs_are_written_in_one_statement(count, transactional_db):
    jobs = [_queued_job() for _ in range(count)]
    began = timezone.now()
    columns = TrackedDatabaseBackend._column_names()
    ends = []
    for number, job in enumerate(jobs):
        task_result = dict.fromkeys(columns)
        task_result.update(
            task_id=str(job.id),
            status="SUCCESS",
            result=f"{number} {AWKWARD_TEXT}",
            meta="{}",
            content_type="application/json",
            content_encoding="utf-8",
            task_name="jobs.noop",
            worker="batch@test",
            date_created=began,
            date_done=began + timedelta(seconds=1),
        )
        ends.append(
            end_batches.End(
                job_id=str(job.id),
                started_at=began,
                finished_at=began + timedelta(seconds=1),
                worker="batch@test",
                task_result=[task_result[name] for name in columns],
            )
        )

    # As the worker's main process sends it: one statement, on a connection
    # of its own, the answer read without blocking (here waited for).
    statement = LoopStatement("default")
    outcomes = []
    try:
        statement.send(*TrackedDatabaseBackend.successes_statement(connection, ends), outcomes.append)
        statement.wait()
    finally:
        statement.close()
    assert outcomes == [None]

    for number, job in enumerate(jobs):
        job.refresh_from_db()
        assert (job.status, job.progress, job.deliveries, job.attempts, job.worker) == (
            JobStatus.SUCCESS,
            100,
            1,
            1,
            "batch@test",
        )
        assert (job.started_at, job.finished_at) == (began, began + timedelta(seconds=1))
        assert job.queued_at <= job.started_at
        result = TaskResult.objects.get(task_id=str(job.id))
        assert (result.status, result.result, result.worker) == ("SUCCESS", f"{number} {AWKWARD_TEXT}", "batch@test")
        assert (result.traceback, result.date_done) == (None, began + timedelta(seconds=1))


@pytest.mark.integration
def test_a_worker_records_every_end_it_holds_and_acknowledges_every_message(start_worker):
    worker = start_worker(queues="default", concurrency=2)
    jobs = [enqueue("jobs.noop") for _ in range(80)]
    wait_for(
        lambda: Job.objects.filter(pk__in=[job.pk for job in jobs], status=JobStatus.SUCCESS).count() == len(jobs),
        timeout=60,
        what="every job to succeed",
    )
    # A warm stop: a message held but never acknowledged would be back on
    # the queue once the worker's connection closes.
    worker.stop()
    assert ready_messages(Queue.DEFAULT.value) == 0, worker.read_log()[-2000:]
    for job in Job.objects.filter(pk__in=[job.pk for job in jobs]):
        assert (job.deliveries, job.attempts, job.worker) == (1, 1, worker.name)
        assert job.queued_at <= job.started_at <= job.finished_at
    assert TaskResult.objects.filter(task_id__in=[str(job.pk) for job in jobs], status="SUCCESS").count() == len(jobs)


@pytest.mark.integration
def test_a_short_jobs_end_does_not_wait_for_a_long_job_beside_it(start_worker, tmp_path):
    """The end of a job that finished while another still runs is held for
    a moment only (END_BATCH_WAIT_SECONDS), not until the other ends."""
    worker = start_worker(queues="default", concurrency=2)
    marker = tmp_path / "long-job-running"
    long_job = enqueue("testapp.block", 15, str(marker))
    wait_for(marker.exists, timeout=60, what="the long job to start")
    short_job = enqueue("jobs.noop")
    wait_for(
        lambda: Job.objects.get(pk=short_job.pk).status == JobStatus.SUCCESS,
        timeout=20,
        what="the short job's end to be written",
    )
    assert not Job.objects.get(pk=long_job.pk).is_finished
    worker.kill_main()  # rather than wait for the long job


@pytest.mark.integration
def test_a_worker_stopped_while_it_holds_ends_writes_and_acknowledges_them_first(start_worker):
    """Every job that ran before a warm stop has its end written and its
    message acknowledged; every other one is QUEUED with its message back on
    the queue: none SUCCESS with its message left to run again."""
    worker = start_worker(queues="default", concurrency=2)
    ids = [enqueue("testapp.block", 0.05).pk for _ in range(400)]
    wait_for(
        lambda: Job.objects.filter(pk__in=ids, status=JobStatus.SUCCESS).count() >= 60,
        timeout=60,
        what="the jobs to be under way",
    )
    worker.stop()
    unfinished = Job.objects.filter(pk__in=ids).exclude(status=JobStatus.SUCCESS)
    assert unfinished.count() > 0, "every job ran before the stop"
    assert set(unfinished.values_list("status", flat=True)) == {JobStatus.QUEUED}
    assert ready_messages(Queue.DEFAULT.value) == unfinished.count(), worker.read_log()[-3000:]
