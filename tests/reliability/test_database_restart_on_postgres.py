"""PostgreSQL stopped and started under load, on the suite's own cluster
(postgres_node.py; the machine's PostgreSQL on 5432 is never touched). The
worker survives the outage and carries on by itself, every job completes,
and none stays STARTED for good: a job whose worker vanished while the
database was away is marked LOST by the reaper, and its retry succeeds."""

import time
from datetime import timedelta

import dj_database_url
import pytest
from django.core.management import call_command
from django.db import connection
from django.db.models import F

from jobs.maintenance import jobs_reap_lost
from jobs.models import Job, JobStatus
from jobs.queues import QUEUE_TIME_LIMITS, Queue
from jobs.services import enqueue, job_retry
from tests.helpers import jobs_by_status, wait_for

pytestmark = pytest.mark.integration

JOBS = 40


@pytest.fixture
def on_fault_postgres(fault_postgres, transactional_db, worker_env):
    """The test process's `default` connection and the workers it starts use
    the suite's own cluster; afterwards its tables are emptied and the
    connection goes back to pytest-django's database."""
    fault_postgres.start()
    saved = dict(connection.settings_dict)
    connection.close()
    parsed = dj_database_url.parse(fault_postgres.url)
    connection.settings_dict.update({key: parsed[key] for key in ("NAME", "HOST", "PORT", "USER", "PASSWORD")})
    worker_env["DATABASE_URL"] = fault_postgres.url
    try:
        yield fault_postgres
    finally:
        fault_postgres.start()  # a failed test may have left it stopped
        connection.close()
        call_command("flush", interactive=False, verbosity=0, inhibit_post_migrate=True)
        connection.close()
        connection.settings_dict.clear()
        connection.settings_dict.update(saved)


def restart(fault_postgres, *, down_for: float = 2) -> None:
    fault_postgres.stop()
    time.sleep(down_for)  # the outage: workers keep taking jobs meanwhile
    fault_postgres.start()
    # The test process's own connection died with the server; a worker has
    # to notice that by itself.
    connection.close()


def test_jobs_running_across_a_database_restart_all_complete(on_fault_postgres, start_worker):
    worker = start_worker(concurrency=2)
    jobs = [enqueue("testapp.block", 0.2) for _ in range(JOBS)]
    wait_for(lambda: jobs_by_status(jobs).get(JobStatus.SUCCESS, 0) >= 5, timeout=60, what="the load to be under way")
    before = jobs_by_status(jobs)

    restart(on_fault_postgres)

    after = jobs_by_status(jobs)
    assert before.get(JobStatus.SUCCESS, 0) < JOBS, f"the load was over before the database stopped: {before}"
    wait_for(
        lambda: jobs_by_status(jobs).get(JobStatus.SUCCESS, 0) == JOBS,
        timeout=120,
        interval=0.5,
        what=f"every job to succeed (before the restart {before}, just after it {after}); "
        f"worker log: {worker.log_path}",
    )
    assert jobs_by_status(jobs) == {JobStatus.SUCCESS: JOBS}  # none left STARTED or QUEUED
    assert worker.process.poll() is None, "the worker had to be restarted by hand"
    # A job whose end could not be recorded ran again, once.
    assert not Job.objects.filter(pk__in=[job.pk for job in jobs], attempts__gt=2).exists()


def test_a_job_whose_worker_vanished_during_the_outage_is_reaped_lost_and_its_retry_succeeds(
    on_fault_postgres, start_worker, tmp_path
):
    worker = start_worker()
    marker = tmp_path / "first-run"
    job = enqueue("testapp.slow_first_time", str(marker), 60)
    wait_for(marker.exists, timeout=60, what="the job to start")
    # A running job shows as STARTED within about a second (jobs.starts);
    # one whose worker died before that is QUEUED, and simply redelivered.
    wait_for(lambda: Job.objects.get(pk=job.pk).status == JobStatus.STARTED, timeout=10, what="STARTED")

    on_fault_postgres.stop()
    worker.kill_main()  # the host dies while nothing can be recorded
    on_fault_postgres.start()
    connection.close()

    job.refresh_from_db()
    assert job.status == JobStatus.STARTED  # and no worker will ever finish it
    assert jobs_reap_lost(grace_seconds=0) == 0, "reaped while its time limit still ran"
    # The reaper waits out the queue's hard time limit (90 s): the row's
    # clock is moved back by that much rather than making the test wait.
    limit = QUEUE_TIME_LIMITS[Queue.DEFAULT].hard
    Job.objects.filter(pk=job.pk).update(started_at=F("started_at") - timedelta(seconds=limit + 1))
    assert jobs_reap_lost(grace_seconds=0) == 1

    job.refresh_from_db()
    assert job.status == JobStatus.LOST
    assert "its worker vanished" in job.error
    retry = job_retry(job=job)
    start_worker()
    wait_for(lambda: Job.objects.get(pk=retry.pk).status == JobStatus.SUCCESS, timeout=60, what="the retry to run")
    assert Job.objects.get(pk=retry.pk).retry_of_id == job.pk
    # The lost job's own message was still on the broker: it ran as well,
    # rather than being dropped (LOST stays runnable).
    wait_for(lambda: Job.objects.get(pk=job.pk).status == JobStatus.SUCCESS, timeout=60, what="the lost job to run")


@pytest.mark.parametrize(
    ("batched_ends", "giving_up"),
    [
        # The worker child writes the end, and exits before acknowledging.
        ("false", "this worker child exits"),
        # The worker's main process writes it (jobs.end_batches), and hands
        # the message back instead of acknowledging it.
        ("true", "their messages go back to the queue"),
    ],
)
def test_a_job_that_ran_while_the_database_stayed_down_is_handed_back_and_runs_once_it_is_back(
    on_fault_postgres, start_worker, worker_env, tmp_path, batched_ends, giving_up
):
    """Its start was deferred to its end statement (jobs.starts), and the
    database stayed away for longer than the result backend retries: the
    job's message is not acknowledged, so the job is not left QUEUED with
    its message gone; it runs again once the database is back."""
    worker_env.update(
        # The start stays deferred for the whole run, and the backend gives
        # up after one retry instead of about a minute.
        JOBS_START_RECORD_DELAY_MS="60000",
        CELERY_RESULT_BACKEND_MAX_RETRIES="1",
        JOBS_BATCHED_ENDS=batched_ends,
    )
    worker = start_worker()
    marker = tmp_path / "running"
    job = enqueue("testapp.block", 2, str(marker))
    wait_for(marker.exists, timeout=60, what="the job to start")
    assert Job.objects.get(pk=job.pk).status == JobStatus.QUEUED  # its start is deferred

    on_fault_postgres.stop()
    wait_for(
        lambda: giving_up in worker.read_log(),
        timeout=60,
        what="the worker to give up on the job's end",
    )
    on_fault_postgres.start()
    connection.close()

    wait_for(
        lambda: Job.objects.get(pk=job.pk).status == JobStatus.SUCCESS,
        timeout=90,
        interval=0.5,
        what=f"the handed-back job to run again; worker log: {worker.log_path}",
    )
    assert worker.process.poll() is None, "the worker had to be restarted by hand"
