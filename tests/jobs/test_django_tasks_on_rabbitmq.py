"""Django's Tasks API run by real workers on RabbitMQ and PostgreSQL: the
kit's guarantees hold for `@task` functions as for any job."""

from datetime import timedelta

import pytest
from django.contrib.admin.models import LogEntry
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from jobs.models import Job, JobStatus
from tests.helpers import wait_for
from tests.testapp import tasks

try:
    from django.tasks import TaskResultStatus
except ImportError:
    from django_tasks import TaskResultStatus

pytestmark = pytest.mark.integration


def finished(result, timeout: float = 30):
    """Wait until the task's result is final, refreshing it through the backend."""

    def reload():
        result.refresh()
        return result.is_finished

    wait_for(reload, timeout=timeout, what=f"{result.task.module_path} to finish (status {result.status})")
    return result


def test_a_rolled_back_enqueue_runs_nothing_and_a_committed_one_runs_once(start_worker, tmp_path):
    # One worker for the whole mapping: it starts slowly on two shared cores.
    start_worker(queues="default,email")
    runs = tmp_path / "runs.txt"

    with pytest.raises(RuntimeError), transaction.atomic():
        tasks.dj_record.enqueue(str(runs), "rolled back")
        raise RuntimeError("the caller's work failed")
    with transaction.atomic():
        committed = tasks.dj_record.enqueue(str(runs), "committed")
        # Not on the broker before the commit.
        assert Job.objects.get(pk=committed.id).status == JobStatus.PENDING
    added = tasks.dj_add.enqueue(2, b=3)  # queue_name="email"
    doubled = tasks.dj_double.enqueue(21)  # a coroutine
    due = timezone.now() + timedelta(seconds=3)
    deferred = tasks.dj_record.using(run_after=due).enqueue(str(tmp_path / "deferred.txt"), "due")

    assert finished(committed).status == TaskResultStatus.SUCCESSFUL
    assert committed.return_value == "committed"
    assert finished(added).return_value == {"sum": 5, "pair": [2, 3]}
    assert finished(doubled).return_value == 42
    assert Job.objects.get(pk=added.id).queue == "email"
    assert finished(deferred).status == TaskResultStatus.SUCCESSFUL
    assert deferred.started_at >= due
    # Every Job of the task, and every line: the rolled back one never existed.
    assert runs.read_text() == "committed\n"
    assert Job.objects.filter(task_name=tasks.dj_record.module_path, args__contains=[str(runs)]).count() == 1
    assert committed.attempts == 1 and committed.worker_ids[0].startswith("test-")
    assert committed.enqueued_at <= committed.started_at <= committed.finished_at
    # get_result from the task (another lookup) agrees with refresh().
    fetched = tasks.dj_record.get_result(committed.id)
    assert (fetched.status, fetched.return_value, fetched.args) == (
        committed.status,
        "committed",
        [str(runs), "committed"],
    )


def test_the_context_gives_attempt_and_job_id_and_declared_transient_errors_retry(start_worker):
    start_worker()

    result = finished(tasks.dj_flaky_with_context.enqueue(failures=1))

    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == {"attempt": 2, "job_id": result.id, "retries": 1}
    job = Job.objects.get(pk=result.id)
    # context.progress wrote the message (success sets the percent to 100 but
    # leaves the message as the task last reported it).
    assert (job.attempts, job.progress, job.progress_message) == (2, 100, "attempt 2")


def test_a_failure_comes_back_with_its_traceback_and_an_admin_retry_replays_it(start_worker, tmp_path, admin_client):
    start_worker()
    path = tmp_path / "needed.txt"

    failed = finished(tasks.dj_fail_unless_file.enqueue(str(path)))

    assert failed.status == TaskResultStatus.FAILED
    [error] = failed.errors
    assert error.exception_class is RuntimeError
    assert "raise RuntimeError" in error.traceback and "needed.txt is missing" in error.traceback
    with pytest.raises(ValueError, match="Task failed"):
        failed.return_value  # noqa: B018  (Django raises for a failed task)

    path.touch()  # the fix
    response = admin_client.post(
        reverse("admin:jobs_job_changelist"), {"action": "retry_selected", "_selected_action": [failed.id]}, follow=True
    )
    assert response.status_code == 200
    retry = Job.objects.get(retry_of_id=failed.id)
    assert retry.task_name == tasks.dj_fail_unless_file.module_path
    assert LogEntry.objects.filter(object_id=failed.id).exists()

    retried = finished(tasks.dj_fail_unless_file.get_result(str(retry.id)))
    assert (retried.status, retried.return_value) == (TaskResultStatus.SUCCESSFUL, "found")


def test_a_worker_child_killed_mid_task_is_redelivered_and_a_poison_task_ends_dead(start_worker, tmp_path):
    start_worker()

    survivor = tasks.dj_kill_worker_once.enqueue(str(tmp_path / "killed-once"))
    poison = tasks.dj_kill_worker_always.enqueue()

    assert finished(survivor, timeout=60).return_value == "survived"
    assert survivor.attempts == 2  # the killed run and the one that finished
    assert finished(poison, timeout=90).status == TaskResultStatus.FAILED
    assert (poison.job_status, poison.attempts) == (JobStatus.DEAD, 4)  # three died; the fourth was refused
    [error] = poison.errors
    assert error.exception_class.__name__ == "JobDead"
    assert "Started 3 times without finishing" in error.traceback


def test_a_message_carries_its_queues_time_limits_and_priority(broker, transactional_db):
    # A task made for one queue and sent to another (.using) runs under the
    # limits of the queue it is sent to. The message as RabbitMQ holds it:
    from jobs.queues import PRIORITY_VALUE, QUEUE_TIME_LIMITS, Priority, Queue

    result = tasks.dj_record.using(queue_name="reports", priority=7).enqueue("/dev/null", "x")

    with broker.connection_for_read() as connection:
        message = wait_for(lambda: connection.default_channel.basic_get("reports", no_ack=True), what="the message")
    limits = QUEUE_TIME_LIMITS[Queue.REPORTS]
    assert message.headers["id"] == result.id
    assert message.headers["task"] == tasks.dj_record.module_path
    assert message.headers["timelimit"] == [limits.hard, limits.soft]
    assert message.properties["priority"] == PRIORITY_VALUE[Priority.HIGH]


def test_priorities_order_the_work_waiting_for_a_busy_worker(start_worker, tmp_path):
    busy, runs = tmp_path / "busy", tmp_path / "runs.txt"
    start_worker(concurrency=1)
    blocker = tasks.dj_block.enqueue(2, str(busy))
    wait_for(busy.exists, what="the single worker slot to be busy")
    waiting = [
        tasks.dj_record.using(priority=priority).enqueue(str(runs), name)
        for priority, name in [(-100, "low"), (0, "default"), (-1, "low"), (1, "high"), (100, "high")]
    ]

    for result in [blocker, *waiting]:
        finished(result, timeout=60)

    assert runs.read_text().split() == ["high", "high", "default", "low", "low"]
