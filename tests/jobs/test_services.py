"""The job services on PostgreSQL, without a worker."""

from datetime import timedelta

import pytest
from django.utils import timezone
from django_celery_results.models import TaskResult

from jobs.exceptions import BadInput, UnknownTask
from jobs.maintenance import jobs_prune, jobs_reap_lost
from jobs.models import Job, JobStatus
from jobs.publishing import job_publish
from jobs.services import enqueue, job_cancel, job_enqueue, job_enqueue_or_find, job_retry
from jobs.tracking import StartOutcome, error_summary, job_mark_started, job_record_outcome, job_report_progress

pytestmark = pytest.mark.django_db


def test_enqueue_creates_a_pending_job_and_publishes_only_after_commit(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        job = enqueue("jobs.sleep", 1.5, steps=3, priority="high")

    assert Job.objects.get(pk=job.pk).status == JobStatus.PENDING
    assert (job.task_name, job.args, job.kwargs, job.priority, job.queue) == (
        "jobs.sleep",
        [1.5],
        {"steps": 3},
        "high",
        "default",
    )
    assert len(callbacks) == 1  # the publish, waiting for the commit


def test_enqueue_refuses_arguments_that_are_not_json():
    with pytest.raises(BadInput, match="args must be JSON"):
        enqueue("jobs.sleep", object())
    assert not Job.objects.exists()


def test_enqueue_refuses_an_unknown_task():
    with pytest.raises(UnknownTask, match="No job task named 'nope'"):
        enqueue("nope")


def test_countdown_sets_the_eta():
    before = timezone.now()
    job = enqueue("jobs.noop", countdown=60)
    assert before + timedelta(seconds=59) < job.eta < timezone.now() + timedelta(seconds=61)


def test_a_unique_key_returns_the_active_job_instead_of_a_second_one():
    first = enqueue("jobs.noop", unique_key="nightly-report")
    again = enqueue("jobs.noop", unique_key="nightly-report")
    assert again.pk == first.pk
    assert Job.objects.count() == 1

    Job.objects.filter(pk=first.pk).update(status=JobStatus.SUCCESS)
    assert enqueue("jobs.noop", unique_key="nightly-report").pk != first.pk


def test_job_enqueue_or_find_says_whether_an_active_job_held_the_key():
    first, deduplicated = job_enqueue_or_find(task_name="jobs.noop", unique_key="nightly-report")
    assert not deduplicated
    again, deduplicated = job_enqueue_or_find(task_name="jobs.noop", unique_key="nightly-report")
    assert (again.pk, deduplicated) == (first.pk, True)

    Job.objects.filter(pk=first.pk).update(status=JobStatus.SUCCESS)
    fresh, deduplicated = job_enqueue_or_find(task_name="jobs.noop", unique_key="nightly-report")
    assert fresh.pk != first.pk and not deduplicated


def test_start_counts_deliveries_and_the_fourth_delivery_is_dead():
    job = enqueue("jobs.noop")
    outcomes = [job_mark_started(job_id=str(job.id), worker="w1") for _ in range(4)]

    job.refresh_from_db()
    assert outcomes == [StartOutcome.RUN] * 3 + [StartOutcome.SKIP]
    assert (job.status, job.attempts, job.deliveries) == (JobStatus.DEAD, 4, 4)
    assert job.finished_at is not None


def test_a_clean_retry_resets_the_delivery_count():
    job = enqueue("jobs.noop")
    for _ in range(3):
        job_mark_started(job_id=str(job.id), worker="w1")
    job_record_outcome(job_id=str(job.id), celery_state="RETRY", result={"exc_type": "Retry", "exc_message": ["in 1s"]})

    assert job_mark_started(job_id=str(job.id), worker="w1") is StartOutcome.RUN
    job.refresh_from_db()
    assert (job.status, job.deliveries, job.attempts) == (JobStatus.STARTED, 1, 4)


def test_cancelled_and_finished_jobs_are_not_started_again():
    cancelled = enqueue("jobs.noop")
    assert job_cancel(job=cancelled) is True
    done = enqueue("jobs.noop")
    Job.objects.filter(pk=done.pk).update(status=JobStatus.SUCCESS)

    assert job_mark_started(job_id=str(cancelled.id), worker="w1") is StartOutcome.SKIP
    assert job_mark_started(job_id=str(done.id), worker="w1") is StartOutcome.SKIP
    assert job_mark_started(job_id="5b6f1c2e-0000-4000-8000-000000000000", worker="w1") is StartOutcome.UNTRACKED
    assert Job.objects.get(pk=cancelled.pk).status == JobStatus.REVOKED


def test_cancel_leaves_a_finished_job_alone():
    job = enqueue("jobs.noop")
    Job.objects.filter(pk=job.pk).update(status=JobStatus.SUCCESS)
    assert job_cancel(job=job) is False
    assert Job.objects.get(pk=job.pk).status == JobStatus.SUCCESS


def test_retry_replays_the_canonical_arguments_and_links_the_original(admin_user):
    failed = enqueue("jobs.sleep", 2, steps=4, priority="low")
    Job.objects.filter(pk=failed.pk).update(status=JobStatus.FAILURE)
    failed.refresh_from_db()

    retried = job_retry(job=failed, requested_by=admin_user)

    assert (retried.task_name, retried.args, retried.kwargs, retried.priority) == (
        "jobs.sleep",
        [2],
        {"steps": 4},
        "low",
    )
    assert retried.retry_of == failed
    assert list(failed.retries.all()) == [retried]
    assert retried.requested_by == admin_user


def test_a_successful_or_running_job_cannot_be_retried():
    job = enqueue("jobs.noop")
    with pytest.raises(BadInput, match="only failed, cancelled, dead or lost jobs"):
        job_retry(job=job)


def test_the_backend_outcome_moves_the_job_and_keeps_a_readable_error():
    job = enqueue("jobs.noop")
    job_record_outcome(
        job_id=str(job.id),
        celery_state="FAILURE",
        result={
            "exc_type": "BadInput",
            "exc_message": ["image too large: 20000x20000"],
            "exc_module": "jobs.exceptions",
        },
    )
    job.refresh_from_db()
    assert (job.status, job.error) == (JobStatus.FAILURE, "BadInput: image too large: 20000x20000")


def test_error_summaries_name_time_limits_in_words():
    assert error_summary({"exc_type": "TimeLimitExceeded", "exc_message": [90]}).startswith(
        "Hard time limit exceeded (90 s)"
    )
    assert error_summary(ValueError("bad", "value")) == "ValueError: bad value"


def test_prune_deletes_old_finished_jobs_and_their_results_in_batches():
    old = timezone.now() - timedelta(days=40)
    finished = [enqueue("jobs.noop") for _ in range(5)]
    Job.objects.filter(pk__in=[j.pk for j in finished]).update(status=JobStatus.SUCCESS, finished_at=old)
    for job in finished:
        TaskResult.objects.create(task_id=str(job.id), status="SUCCESS")
    recent = enqueue("jobs.noop")
    Job.objects.filter(pk=recent.pk).update(status=JobStatus.SUCCESS, finished_at=timezone.now())
    active = enqueue("jobs.noop")
    # A retry of an old job survives its original (retry_of is SET NULL).
    retry = enqueue("jobs.noop")
    Job.objects.filter(pk=retry.pk).update(retry_of=finished[0])

    assert jobs_prune(older_than=timedelta(days=30), batch_size=2) == 5

    assert set(Job.objects.values_list("pk", flat=True)) == {recent.pk, active.pk, retry.pk}
    assert not TaskResult.objects.filter(task_id__in=[str(j.id) for j in finished]).exists()
    assert Job.objects.get(pk=retry.pk).retry_of is None


def test_enqueue_takes_a_task_object_as_well_as_a_name():
    from jobs.tasks import noop

    assert enqueue(noop).task_name == "jobs.noop"
    assert job_enqueue(task_name="jobs.noop").queue == "default"


def test_calling_delay_on_a_job_task_creates_a_tracked_job(django_capture_on_commit_callbacks):
    from jobs.tasks import sleep

    with django_capture_on_commit_callbacks(execute=False):
        result = sleep.delay(0.1, steps=1)

    job = Job.objects.get(pk=result.id)
    assert (job.task_name, job.args, job.kwargs, job.status) == ("jobs.sleep", [0.1], {"steps": 1}, JobStatus.PENDING)


def test_every_hard_time_limit_is_below_rabbitmqs_consumer_timeout():
    from jobs.queues import QUEUE_TIME_LIMITS, RABBITMQ_CONSUMER_TIMEOUT_SECONDS

    for queue, limits in QUEUE_TIME_LIMITS.items():
        assert limits.soft < limits.hard < RABBITMQ_CONSUMER_TIMEOUT_SECONDS, queue


def test_publishing_after_a_fast_worker_started_the_job_keeps_started_and_records_the_queue_time(broker):

    job = enqueue("jobs.noop")
    job_mark_started(job_id=str(job.id), worker="w1")  # the worker won the race
    assert job_publish(job) is True

    job.refresh_from_db()
    assert job.status == JobStatus.STARTED
    assert job.queued_at == job.started_at


def test_tracking_statements_skip_the_wal_flush_on_their_own_but_never_inside_someone_elses_transaction(
    transactional_db,
):
    from django.db import connection, transaction
    from django.test.utils import CaptureQueriesContext

    def synchronous_commit() -> str:
        with connection.cursor() as cursor:
            cursor.execute("SHOW synchronous_commit")
            return cursor.fetchone()[0]

    job = enqueue("jobs.noop")
    relaxing = "set_config('synchronous_commit', 'off', true)"
    with CaptureQueriesContext(connection) as alone:
        job_report_progress(job_id=str(job.id), percent=10)
    assert relaxing in alone.captured_queries[-1]["sql"]
    assert synchronous_commit() == "on"  # it lasted one statement

    with transaction.atomic(), CaptureQueriesContext(connection) as inside:
        job_report_progress(job_id=str(job.id), percent=20)
        assert synchronous_commit() == "on"
    assert relaxing not in inside.captured_queries[0]["sql"]
    assert Job.objects.get(pk=job.pk).progress == 20


def test_tracking_statements_bind_their_parameters_on_the_server(transactional_db):
    """The worker's hot path quotes no parameter into the SQL in Python:
    PostgreSQL receives the statement with $n placeholders, as its own view
    of the connection's last query shows."""
    import psycopg
    from celery import states
    from django.db import connection

    from config.celery_app import app
    from tests.helpers import test_database_url

    job = enqueue("jobs.noop")
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]

    def last_statement() -> str:
        with psycopg.connect(test_database_url(), autocommit=True) as observer:
            return observer.execute("SELECT query FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone()[0]

    assert job_mark_started(job_id=str(job.id), worker="w1") is StartOutcome.RUN
    started = last_statement()
    app.backend.store_result(str(job.id), {"ok": True}, states.SUCCESS)
    finished = last_statement()

    assert "RETURNING status" in started and "$1" in started and str(job.id.hex) not in started
    assert "WITH job AS" in finished and "$1" in finished and str(job.id) not in finished
    assert Job.objects.get(pk=job.pk).status == JobStatus.SUCCESS
    assert TaskResult.objects.get(task_id=str(job.id)).result == '{"ok": true}'


def test_tracking_statements_are_prepared_once_per_connection(transactional_db):
    """Past its first runs, each tracking statement is parsed and planned
    once per connection, not once per job; Django's own queries (client-side
    binding) are never prepared."""
    from celery import states
    from django.db import connection

    from config.celery_app import app

    jobs = [enqueue("jobs.noop") for _ in range(8)]
    for job in jobs:
        assert job_mark_started(job_id=str(job.id), worker="w1") is StartOutcome.RUN
        app.backend.store_result(str(job.id), None, states.SUCCESS)
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        prepared = [row[0] for row in cursor.fetchall()]

    assert [statement for statement in prepared if "RETURNING status" in statement] != []
    assert [statement for statement in prepared if "WITH job AS" in statement] != []
    assert len(prepared) == len(set(prepared)), prepared
    assert all("$1" in statement for statement in prepared), prepared
    assert Job.objects.filter(status=JobStatus.SUCCESS).count() == len(jobs)


def test_prepared_statements_can_be_turned_off_for_a_pooler(monkeypatch):
    from config.settings.base import _database

    url = "postgres://kit@db.example:5432/kit?sslmode=require"
    monkeypatch.delenv("DB_PREPARED_STATEMENTS", raising=False)
    assert _database(url)["OPTIONS"] == {"sslmode": "require", "prepare_threshold": 5, "server_side_binding": True}
    monkeypatch.setenv("DB_PREPARED_STATEMENTS", "false")
    assert _database(url)["OPTIONS"] == {"sslmode": "require", "prepare_threshold": None, "server_side_binding": False}
    assert "prepare_threshold" not in _database("sqlite:////tmp/kit.sqlite3")["OPTIONS"]


def test_a_connection_the_database_dropped_is_replaced_by_the_next_tracking_statement(transactional_db):
    """What Django's per-request health check would do, without its extra
    round trip per task: a restarted database costs no job."""
    import psycopg
    from django.db import connection

    from tests.helpers import test_database_url

    job = enqueue("jobs.noop")

    def backend_pid() -> int:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            return cursor.fetchone()[0]

    dropped = backend_pid()
    with psycopg.connect(test_database_url(), autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [dropped])

    assert job_mark_started(job_id=str(job.id), worker="w1") is StartOutcome.RUN
    assert Job.objects.get(pk=job.pk).status == JobStatus.STARTED
    assert backend_pid() != dropped


def test_a_retry_keeps_the_unique_key_so_two_retries_do_not_run_twice():
    failed = enqueue("jobs.noop", unique_key="image-42")
    Job.objects.filter(pk=failed.pk).update(status=JobStatus.FAILURE)
    failed.refresh_from_db()

    first = job_retry(job=failed)
    second = job_retry(job=failed)

    assert first.unique_key == "image-42"
    assert second.pk == first.pk


def test_the_reaper_marks_lost_only_jobs_started_longer_than_their_limit_and_they_can_still_run():
    from jobs.queues import QUEUE_TIME_LIMITS, Queue

    limit = QUEUE_TIME_LIMITS[Queue.DEFAULT].hard
    vanished, running, queued = (enqueue("jobs.noop") for _ in range(3))
    Job.objects.filter(pk__in=[vanished.pk, running.pk]).update(status=JobStatus.STARTED)
    Job.objects.filter(pk=vanished.pk).update(started_at=timezone.now() - timedelta(seconds=limit + 61))
    Job.objects.filter(pk=running.pk).update(started_at=timezone.now() - timedelta(seconds=limit - 5))
    Job.objects.filter(pk=queued.pk).update(status=JobStatus.QUEUED, created_at=timezone.now() - timedelta(days=1))

    assert jobs_reap_lost(grace_seconds=60) == 1

    statuses = dict(Job.objects.values_list("pk", "status"))
    assert (statuses[vanished.pk], statuses[running.pk], statuses[queued.pk]) == ("LOST", "STARTED", "QUEUED")
    assert "its worker vanished" in Job.objects.get(pk=vanished.pk).error
    # If the broker had the message after all, it runs rather than vanishes.
    assert job_mark_started(job_id=str(vanished.id), worker="w2") is StartOutcome.RUN


def test_a_published_jobs_own_copy_says_queued_as_its_row_does(broker):
    job = enqueue("jobs.noop")
    assert job_publish(job) is True
    assert job.status == JobStatus.QUEUED and job.queued_at is not None
    assert Job.objects.get(pk=job.pk).status == JobStatus.QUEUED
