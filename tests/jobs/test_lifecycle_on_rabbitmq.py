"""The job lifecycle through a real worker on RabbitMQ and PostgreSQL."""

import pytest
from django_celery_results.models import TaskResult

from jobs.models import Job, JobStatus
from jobs.services import enqueue, job_retry
from tests.helpers import wait_for

pytestmark = pytest.mark.integration


def finished(job: Job, timeout: float = 30) -> Job:
    def reload():
        job.refresh_from_db()
        return job.is_finished

    wait_for(reload, timeout=timeout, what=f"job {job.task_name} to finish (status {job.status})")
    return job


def test_a_job_runs_and_its_result_is_stored(start_worker):
    start_worker()
    job = finished(enqueue("jobs.sleep", 0.2, 2))

    assert job.status == JobStatus.SUCCESS
    assert job.attempts == 1
    assert job.progress == 100
    assert job.queued_at <= job.started_at <= job.finished_at
    result = TaskResult.objects.get(task_id=str(job.id))
    assert result.status == "SUCCESS"
    assert result.result == '{"slept": 0.2}'


def test_a_failing_job_ends_failed_with_its_traceback(start_worker):
    start_worker()
    job = finished(enqueue("testapp.fail_with", "the disk is on fire"))

    assert job.status == JobStatus.FAILURE
    assert job.error == "RuntimeError: the disk is on fire"
    assert job.attempts == 1
    traceback = TaskResult.objects.get(task_id=str(job.id)).traceback
    assert "RuntimeError: the disk is on fire" in traceback
    assert "tasks.py" in traceback


def test_bad_input_fails_at_once_without_retry(start_worker):
    start_worker()
    job = finished(enqueue("testapp.bad_input", "blurple"))

    assert job.status == JobStatus.FAILURE
    assert job.error == "BadInput: 'blurple' is not a valid colour"
    assert job.attempts == 1


def test_transient_errors_are_retried_until_the_job_succeeds(start_worker):
    start_worker()
    job = finished(enqueue("testapp.transient_then_ok", 2))

    assert job.status == JobStatus.SUCCESS
    assert job.attempts == 3
    assert TaskResult.objects.get(task_id=str(job.id)).result == "2"


def test_a_retry_replays_the_stored_arguments_and_succeeds_after_a_fix(start_worker, tmp_path):
    start_worker()
    marker = tmp_path / "fixed"
    failed = finished(enqueue("testapp.fail_unless_file", str(marker)))
    assert failed.status == JobStatus.FAILURE

    marker.touch()
    retried = finished(job_retry(job=failed))

    assert retried.status == JobStatus.SUCCESS
    assert retried.retry_of_id == failed.id
    assert retried.args == [str(marker)]


def test_a_worker_child_killed_mid_task_loses_no_job(start_worker, tmp_path):
    start_worker()
    job = finished(enqueue("testapp.kill_worker_once", str(tmp_path / "killed-once")))

    assert job.status == JobStatus.SUCCESS
    assert job.attempts == 2
    assert TaskResult.objects.get(task_id=str(job.id)).result == '"survived"'


def test_a_worker_killed_with_sigkill_mid_task_is_redelivered_to_the_next_worker(start_worker, tmp_path):
    marker = tmp_path / "running"
    first = start_worker()
    job = enqueue("testapp.block", 3, str(marker))
    wait_for(marker.exists, what="the job to start on the first worker")
    # A running job shows as STARTED within about a second (jobs.starts): a
    # worker that dies whole before that leaves its delivery uncounted.
    wait_for(lambda: Job.objects.get(pk=job.pk).status == JobStatus.STARTED, what="the job to show as STARTED")

    first.kill_main()
    start_worker()
    finished(job)

    assert job.status == JobStatus.SUCCESS
    assert job.attempts == 2
    assert job.worker != first.name


def test_a_task_that_kills_its_worker_every_time_ends_dead(start_worker):
    start_worker()
    poison = enqueue("testapp.kill_worker_always")
    healthy = enqueue("jobs.noop")

    finished(poison, timeout=60)
    finished(healthy)

    assert poison.status == JobStatus.DEAD
    assert poison.attempts == 4  # three deliveries ran and died; the fourth was refused
    assert "Started 3 times without finishing" in poison.error
    assert healthy.status == JobStatus.SUCCESS


def test_the_hard_time_limit_fails_the_job_once(start_worker):
    start_worker()
    job = finished(enqueue("testapp.exceed_time_limit", 30))

    assert job.status == JobStatus.FAILURE
    assert job.error.startswith("Hard time limit exceeded (2")
    assert job.attempts == 1


def test_progress_is_visible_while_the_job_runs(start_worker, tmp_path):
    start_worker()
    marker = tmp_path / "halfway"
    job = enqueue("testapp.report_progress", str(marker), 2)
    wait_for(marker.exists, what="the job to report progress")

    job.refresh_from_db()
    assert (job.status, job.progress, job.progress_message) == (JobStatus.STARTED, 40, "halfway there")
    assert finished(job).progress == 100


def test_a_high_priority_job_overtakes_a_backlog_of_low_ones(start_worker, tmp_path):
    marker = tmp_path / "busy"
    worker = start_worker(concurrency=1)
    blocker = enqueue("testapp.block", 2, str(marker))
    wait_for(marker.exists, what="the single worker slot to be busy")
    lows = [enqueue("jobs.noop", priority="low") for _ in range(100)]
    high = enqueue("jobs.noop", priority="high")

    for job in [blocker, high, *lows]:
        finished(job, timeout=90)

    started_before_high = sum(1 for low in lows if low.started_at < high.started_at)
    assert started_before_high < 10, worker.read_log()[-2000:]


def test_cancelling_running_and_waiting_jobs_together_stops_the_running_and_never_starts_the_others(
    start_worker, admin_client
):
    """The admin's bulk cancel: the running jobs' children are terminated,
    the jobs still on the broker are acknowledged without running when they
    arrive, and the worker carries on."""
    from django.urls import reverse

    worker = start_worker(concurrency=2)
    running = [enqueue("testapp.block", 30) for _ in range(2)]
    waiting = [enqueue("testapp.block", 30) for _ in range(3)]
    wait_for(
        lambda: Job.objects.filter(pk__in=[job.pk for job in running], status=JobStatus.STARTED).count() == 2,
        timeout=60,
        what="both children to run a blocking job",
    )

    response = admin_client.post(
        reverse("admin:jobs_job_changelist"),
        # confirmed: the answer to the admin's "are you sure" page.
        {
            "action": "cancel_selected",
            "_selected_action": [str(job.pk) for job in [*running, *waiting]],
            "confirmed": "yes",
        },
        follow=True,
    )

    assert "Cancelled 5 jobs." in [str(message) for message in response.context["messages"]]
    # The worker terminated the running children and recorded it, long
    # before their 30 s were up.
    wait_for(
        lambda: (
            set(
                TaskResult.objects.filter(task_id__in=[str(job.id) for job in running]).values_list("status", flat=True)
            )
            == {"REVOKED"}
        ),
        timeout=20,
        what="the worker to terminate both running jobs",
    )
    later = finished(enqueue("jobs.sleep", 0, 1), timeout=60)
    assert later.status == JobStatus.SUCCESS
    assert worker.process.poll() is None
    for job in waiting:
        job.refresh_from_db()
        assert (job.status, job.started_at) == (JobStatus.REVOKED, None)
