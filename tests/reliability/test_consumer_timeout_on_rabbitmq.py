"""A job due later than RabbitMQ's consumer_timeout, on the suite's own node
(conftest.py) with that timeout shortened to seconds.

A worker holds a message with an ETA unacknowledged until it is due, and
RabbitMQ closes the channel of a consumer that holds one longer than
consumer_timeout; by default Celery takes that for an unrecoverable error and
the worker stops (the kit's settings make it reconnect instead). The kit keeps
such jobs PENDING in the database until they are within
JOBS_BROKER_ETA_HORIZON_SECONDS, below the timeout, and the outbox relay
publishes them then (jobs.publishing._held_back). The publisher decides that,
so the tests set the horizon in their own process. The control raises it
above the timeout and sees RabbitMQ close the worker's channel (the shortened
timeout is real), and the worker reconnect and run the job.
"""

import pytest
from django.test import override_settings

from jobs.models import Job, JobStatus
from jobs.publishing import outbox_relay
from jobs.services import enqueue
from tests.helpers import WorkerProcess, wait_for

pytestmark = pytest.mark.integration

CONSUMER_TIMEOUT_SECONDS = 5
# RabbitMQ checks consumer timeouts on each channel tick, every 60 s by
# default: with that, nothing would time out within these tests.
TICK_MS = 250
HORIZON_SECONDS = 2
COUNTDOWN_SECONDS = 10
# RabbitMQ's reason for closing the channel (its wording in 3.10).
TIMED_OUT = "delivery acknowledgement on channel"


@pytest.fixture
def short_consumer_timeout(on_fault_broker):
    """Set before the worker starts: a channel reads consumer_timeout when
    it opens."""
    with on_fault_broker.rabbit_env(consumer_timeout=CONSUMER_TIMEOUT_SECONDS * 1000, channel_tick_interval=TICK_MS):
        yield


def status(job: Job) -> str:
    return Job.objects.get(pk=job.pk).status


def relay_until_published(job: Job) -> bool:
    outbox_relay(grace_seconds=0)
    return status(job) != JobStatus.PENDING


def succeeded(job: Job, worker: WorkerProcess) -> bool:
    assert worker.process.poll() is None, f"the worker stopped:\n{worker.read_log()[-3000:]}"
    return status(job) == JobStatus.SUCCESS


def test_a_job_due_after_the_consumer_timeout_runs_once_when_due_and_the_worker_keeps_its_channel(
    short_consumer_timeout, start_worker
):
    worker = start_worker()
    with override_settings(JOBS_BROKER_ETA_HORIZON_SECONDS=HORIZON_SECONDS):
        job = enqueue("testapp.block", 0, countdown=COUNTDOWN_SECONDS)
        assert status(job) == JobStatus.PENDING  # held back, not on the broker
        wait_for(
            lambda: relay_until_published(job),
            timeout=COUNTDOWN_SECONDS + 30,
            interval=0.5,
            what="the relay to publish the job as it comes near",
        )
    wait_for(lambda: succeeded(job, worker), timeout=60, what=f"the job to run; log: {worker.log_path}")

    job.refresh_from_db()
    assert job.attempts == 1
    assert job.started_at >= job.eta
    later = enqueue("testapp.block", 0)
    wait_for(lambda: succeeded(later, worker), timeout=60, what=f"a later job to run; log: {worker.log_path}")
    assert worker.process.poll() is None
    assert TIMED_OUT not in worker.read_log()
    assert "PRECONDITION_FAILED" not in worker.read_log()


def test_control_when_rabbitmq_closes_the_channel_of_a_job_parked_past_the_timeout_the_worker_reconnects(
    short_consumer_timeout, start_worker
):
    """The control: with the horizon above the timeout, the job goes to the
    broker at once and the worker holds it until due, so RabbitMQ closes the
    worker's channel (the shortened timeout is real). Celery's default would
    take that for an unrecoverable error and exit; the kit's workers
    reconnect (CELERY_BROKER_CHANNEL_ERROR_RETRY), the message comes back,
    and the job still runs when due."""
    worker = start_worker()
    with override_settings(JOBS_BROKER_ETA_HORIZON_SECONDS=3600):
        job = enqueue("testapp.block", 0, countdown=COUNTDOWN_SECONDS)
    assert status(job) == JobStatus.QUEUED  # on the broker at once, with its ETA
    wait_for(
        lambda: TIMED_OUT in worker.read_log(),
        timeout=COUNTDOWN_SECONDS + 30,
        interval=0.5,
        what=f"RabbitMQ to close the worker's channel; log: {worker.log_path}",
    )
    assert "PRECONDITION_FAILED" in worker.read_log()

    wait_for(lambda: succeeded(job, worker), timeout=60, what=f"the job to run; log: {worker.log_path}")
    job.refresh_from_db()
    assert job.started_at >= job.eta
    later = enqueue("testapp.block", 0)
    wait_for(lambda: succeeded(later, worker), timeout=60, what=f"a later job to run; log: {worker.log_path}")
    assert worker.process.poll() is None
    assert "Unrecoverable error" not in worker.read_log()
