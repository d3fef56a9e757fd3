"""Invariant 1: a committed job reaches the broker even if the broker was
unreachable when the job committed."""

import time
from contextlib import contextmanager

import pytest
from celery import current_app
from django.db import transaction

from jobs.models import Job, JobStatus
from jobs.publishing import outbox_relay
from jobs.services import enqueue
from jobs.tasks import noop
from tests.helpers import drop_publishing_pools, wait_for

pytestmark = pytest.mark.integration

# Nothing listens on port 1: connections are refused at once, like a broker
# that is down.
UNREACHABLE_BROKER = "amqp://guest:guest@127.0.0.1:1//"


@contextmanager
def broker_down(monkeypatch):
    """Publishing connections go to a closed port inside the block. Celery
    reads CELERY_BROKER_WRITE_URL from the environment before any setting."""
    monkeypatch.setenv("CELERY_BROKER_WRITE_URL", UNREACHABLE_BROKER)
    drop_publishing_pools()
    try:
        yield
    finally:
        monkeypatch.delenv("CELERY_BROKER_WRITE_URL")
        drop_publishing_pools()


def _messages_in_default_queue() -> int:
    with current_app.connection_for_write() as conn:
        return conn.default_channel.queue_declare("default", passive=True).message_count


def test_a_job_committed_while_the_broker_is_down_runs_once_the_relay_publishes_it(broker, start_worker, monkeypatch):
    with broker_down(monkeypatch):
        began = time.monotonic()
        with transaction.atomic():
            job = enqueue("jobs.noop")
        publish_attempt_seconds = time.monotonic() - began

    job.refresh_from_db()
    assert job.status == JobStatus.PENDING
    assert job.queued_at is None
    # The caller (a web request) is not held hostage by the dead broker.
    assert publish_attempt_seconds < 15

    assert outbox_relay(grace_seconds=0) == 1
    job.refresh_from_db()
    assert job.status == JobStatus.QUEUED
    assert _messages_in_default_queue() == 1
    assert outbox_relay(grace_seconds=0) == 0  # published once, not twice

    start_worker()
    wait_for(lambda: Job.objects.get(pk=job.pk).status == JobStatus.SUCCESS, what="the relayed job to run")


def test_the_relay_stops_at_the_first_refused_publish_and_keeps_the_rest(broker, transactional_db, monkeypatch):
    jobs = [Job.objects.create(task_name=noop.name, queue="default") for _ in range(3)]
    with broker_down(monkeypatch):
        assert outbox_relay(grace_seconds=0) == 0
    assert set(Job.objects.values_list("status", flat=True)) == {JobStatus.PENDING}
    assert outbox_relay(grace_seconds=0) == len(jobs)


def test_the_relay_leaves_young_jobs_to_their_own_publish(broker, transactional_db):
    Job.objects.create(task_name=noop.name, queue="default")
    assert outbox_relay(grace_seconds=60) == 0
    assert _messages_in_default_queue() == 0


def test_a_job_due_beyond_the_horizon_waits_in_the_database_until_it_comes_near(broker, transactional_db):
    from datetime import timedelta

    from django.utils import timezone

    job = enqueue("jobs.noop", countdown=3600)  # committed at once: autocommit
    job.refresh_from_db()
    assert (job.status, _messages_in_default_queue()) == (JobStatus.PENDING, 0)
    assert outbox_relay(grace_seconds=0) == 0

    Job.objects.filter(pk=job.pk).update(eta=timezone.now() + timedelta(seconds=30))
    assert outbox_relay(grace_seconds=0) == 1
    assert Job.objects.get(pk=job.pk).status == JobStatus.QUEUED


def test_a_countdown_job_runs_when_it_is_due(broker, start_worker):
    from django.utils import timezone

    start_worker()
    job = enqueue("jobs.noop", countdown=2)
    wait_for(lambda: Job.objects.get(pk=job.pk).status == JobStatus.SUCCESS, what="the countdown job to run")
    job.refresh_from_db()
    assert job.started_at >= job.eta
    assert job.eta > job.created_at
    assert job.finished_at <= timezone.now()
