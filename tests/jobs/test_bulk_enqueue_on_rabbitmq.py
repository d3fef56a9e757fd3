"""Many jobs from one call (job_enqueue_many): rows inserted together,
messages published over one channel with the broker's confirms awaited once
per batch, not once per message; what the broker did not confirm stays
PENDING for the outbox relay, as with a single job."""

import pytest
from celery import current_app
from django.db import transaction

from jobs.models import Job, JobStatus
from jobs.publishing import _Confirms, outbox_relay
from jobs.services import job_enqueue_many
from tests.helpers import drop_publishing_pools, wait_for
from tests.jobs.test_outbox_on_rabbitmq import _messages_in_default_queue, broker_down

pytestmark = pytest.mark.integration


def _statuses(jobs) -> set:
    return set(Job.objects.filter(pk__in=[job.pk for job in jobs]).values_list("status", flat=True))


def test_jobs_enqueued_together_are_each_on_the_broker_once_and_run(broker, start_worker):
    # More than one confirm batch (1,000), so a batch boundary is crossed.
    calls = [((), {"seconds": 0, "steps": 1}) for _ in range(1500)] + [((0.01 * i,), {}) for i in range(5)]
    with transaction.atomic():
        jobs = job_enqueue_many(task_name="jobs.sleep", calls=calls, priority="low")
        assert _statuses(jobs) == {JobStatus.PENDING}  # nothing leaves before the commit

    assert _statuses(jobs) == {JobStatus.QUEUED}
    assert _messages_in_default_queue() == len(calls)
    stored = Job.objects.get(pk=jobs[-1].pk)
    assert (stored.args, stored.kwargs, stored.priority) == ([0.04], {}, "low")

    start_worker(concurrency=2)
    wait_for(
        lambda: _statuses(jobs) == {JobStatus.SUCCESS},
        timeout=120,
        interval=0.5,
        what="every job enqueued together to succeed",
    )
    assert not Job.objects.filter(pk__in=[job.pk for job in jobs], attempts__gt=1).exists()


def test_a_rolled_back_transaction_publishes_nothing(broker, transactional_db):
    with pytest.raises(RuntimeError), transaction.atomic():
        job_enqueue_many(task_name="jobs.noop", calls=[((), {})] * 10)
        raise RuntimeError("the caller changed its mind")
    assert not Job.objects.exists()
    assert _messages_in_default_queue() == 0


def test_jobs_enqueued_together_while_the_broker_is_down_stay_pending_and_the_relay_publishes_them(
    broker, transactional_db, monkeypatch
):
    with broker_down(monkeypatch):
        jobs = job_enqueue_many(task_name="jobs.noop", calls=[((), {})] * 30)
    assert _statuses(jobs) == {JobStatus.PENDING}

    assert outbox_relay(grace_seconds=0, batch_size=7) == 30
    assert _statuses(jobs) == {JobStatus.QUEUED}
    assert _messages_in_default_queue() == 30


def test_bad_arguments_refuse_the_whole_call_and_create_nothing(db):
    from jobs.exceptions import BadInput

    with pytest.raises(BadInput, match="must be JSON"):
        job_enqueue_many(task_name="jobs.noop", calls=[((), {}), ((object(),), {})])
    assert not Job.objects.exists()


def test_confirms_settle_single_and_multiple_tags_and_keep_nacks_apart():
    confirms = _Confirms(expected=6)
    confirms.on_ack(2, False)
    confirms.on_ack(3, True)  # settles 1 and 3; 2 was settled already
    confirms.on_nack(4, False)
    confirms.on_ack(6, True)  # settles 5 and 6, not the nacked 4
    assert confirms.settled == 6
    assert [confirms.acked(tag) for tag in range(1, 7)] == [True, True, True, False, True, True]


def test_the_embedded_broker_takes_jobs_enqueued_together(transactional_db, tmp_path, monkeypatch):
    """The filesystem transport of `make run` has no publisher confirms: a
    message is stored when the publish returns."""
    folder = tmp_path / "broker"
    folder.mkdir()
    monkeypatch.setenv("CELERY_BROKER_WRITE_URL", "filesystem://")
    options = {"data_folder_in": str(folder), "data_folder_out": str(folder), "control_folder": str(tmp_path)}
    monkeypatch.setitem(current_app.conf, "broker_transport_options", options)
    drop_publishing_pools()
    try:
        jobs = job_enqueue_many(task_name="jobs.noop", calls=[((), {})] * 12)
    finally:
        drop_publishing_pools()
    assert _statuses(jobs) == {JobStatus.QUEUED}
    assert len(list(folder.glob("*.msg"))) == 12


def test_retrying_many_failed_jobs_from_the_admin_inserts_logs_and_publishes_them_together(
    broker, transactional_db, admin_client, django_assert_max_num_queries
):
    """The admin's "retry all failed" over more than two chunks (500): one
    INSERT of jobs and one of log entries per chunk and one confirmed
    publish per thousand, not a commit and a confirm per job (about 6,000
    queries for these 1,200 jobs before)."""
    from django.contrib.admin.models import LogEntry
    from django.urls import reverse

    from jobs.services import enqueue

    failed = Job.objects.bulk_create(
        Job(
            task_name="jobs.sleep",
            args=[0],
            kwargs={"steps": i},
            queue="default",
            priority="low",
            status=JobStatus.FAILURE,
        )
        for i in range(1200)
    )
    keyed = enqueue("jobs.noop", unique_key="one-at-a-time")
    Job.objects.filter(pk=keyed.pk).update(status=JobStatus.DEAD)
    gone = Job.objects.create(task_name="testapp.no_longer_here", queue="default", status=JobStatus.FAILURE)
    already_queued = _messages_in_default_queue()  # the keyed job, published when enqueued

    with django_assert_max_num_queries(100):
        response = admin_client.post(reverse("admin:jobs_job_retry_failed"), follow=True)

    retries = Job.objects.filter(retry_of__isnull=False)
    assert retries.count() == 1201
    assert {job.retry_of_id for job in retries} == {job.pk for job in [*failed, keyed]}
    assert set(retries.values_list("status", flat=True)) == {JobStatus.QUEUED}
    assert _messages_in_default_queue() - already_queued == 1201
    stored = retries.get(retry_of=failed[-1])
    assert (stored.args, stored.kwargs, stored.priority) == ([0], {"steps": 1199}, "low")
    assert LogEntry.objects.filter(change_message__startswith="Retried as job").count() == 1201
    notes = [str(message) for message in response.context["messages"]]
    assert "Retried 1201 jobs." in notes
    assert any("its task testapp.no_longer_here no longer exists" in note for note in notes)
    assert not retries.filter(retry_of=gone).exists()


def test_jobs_enqueued_together_with_task_sent_events_on_are_all_confirmed(broker, transactional_db, settings):
    """`make run` on RabbitMQ sends a task-sent event per job for Flower, on
    the channel of the job's own message: two delivery tags per job, which
    once ran past the confirms' table (IndexError, a 500 from the bulk API)."""
    settings.CELERY_TASK_SEND_SENT_EVENT = True
    current_app.conf.task_send_sent_event = True
    try:
        jobs = job_enqueue_many(task_name="jobs.noop", calls=[((), {})] * 30)
    finally:
        current_app.conf.task_send_sent_event = False
    assert _statuses(jobs) == {JobStatus.QUEUED}
    assert _messages_in_default_queue() == 30
