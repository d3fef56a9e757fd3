"""RabbitMQ stopped and started under load (`rabbitmqctl stop_app` /
`start_app`, on the suite's own node: see conftest.py). Workers reconnect by
themselves; jobs committed while the broker is down stay PENDING and the
outbox relay publishes them once it is back; every committed job completes.
(The broker down at commit alone, with no worker, is
tests/jobs/test_outbox_on_rabbitmq.py.)"""

import time

import pytest

from jobs.models import Job, JobStatus
from jobs.publishing import outbox_relay
from jobs.services import enqueue
from tests.helpers import jobs_by_status, wait_for

pytestmark = pytest.mark.integration

BEFORE, DURING, AFTER = 40, 20, 20


def relay_until_nothing_is_pending() -> bool:
    outbox_relay(grace_seconds=0)
    return not Job.objects.filter(status=JobStatus.PENDING).exists()


def test_jobs_enqueued_and_running_across_a_broker_restart_all_complete(on_fault_broker, start_worker):
    worker = start_worker(concurrency=2)
    before = [enqueue("testapp.block", 0.2) for _ in range(BEFORE)]
    assert jobs_by_status(before).get(JobStatus.PENDING, 0) == 0  # the broker confirmed them
    wait_for(lambda: jobs_by_status(before).get(JobStatus.SUCCESS, 0) >= 5, timeout=60, what="the load to be under way")

    on_fault_broker.stop_app()
    assert jobs_by_status(before).get(JobStatus.SUCCESS, 0) < BEFORE, "the load was over before the broker stopped"
    began = time.monotonic()
    during = [enqueue("testapp.block", 0.2) for _ in range(DURING)]
    assert jobs_by_status(during) == {JobStatus.PENDING: DURING}
    assert time.monotonic() - began < 60, "publishing to a stopped broker must fail fast, not hang the caller"

    on_fault_broker.start_app()
    after = [enqueue("testapp.block", 0.2) for _ in range(AFTER)]
    wait_for(relay_until_nothing_is_pending, timeout=60, interval=1, what="the relay to publish what waited")

    everything = before + during + after
    wait_for(
        lambda: jobs_by_status(everything).get(JobStatus.SUCCESS, 0) == len(everything),
        timeout=120,
        interval=0.5,
        what=f"every job to succeed (now {jobs_by_status(everything)}); worker log: {worker.log_path}",
    )
    assert worker.process.poll() is None, "the worker had to be restarted by hand"
    # Running copies cut off by the outage ran again, once.
    assert not Job.objects.filter(pk__in=[job.pk for job in everything], attempts__gt=2).exists()
    assert "Connection to broker lost" in worker.read_log() or "consumer: Cannot connect" in worker.read_log()


def test_the_api_answers_202_while_the_broker_is_down_and_the_job_runs_once_it_is_back(
    on_fault_broker, start_worker, django_user_model
):
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(django_user_model.objects.create_superuser("ops", "ops@example.com", "pw"))
    start_worker()
    on_fault_broker.stop_app()
    try:
        response = client.post("/api/jobs/", {"task": "jobs.noop"}, format="json")
    finally:
        on_fault_broker.start_app()

    assert response.status_code == 202, response.content
    assert response.json()["status"] == JobStatus.PENDING
    job = Job.objects.get(pk=response.json()["id"])
    assert job.status == JobStatus.PENDING  # committed, not on the broker
    wait_for(relay_until_nothing_is_pending, timeout=60, interval=1, what="the relay to publish the job")
    wait_for(lambda: Job.objects.get(pk=job.pk).status == JobStatus.SUCCESS, timeout=60, what="the job to run")
