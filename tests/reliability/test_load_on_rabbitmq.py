"""A load across every queue with a worker killed and restarted in the
middle: every job is accounted for. (tests/ops/test_worker_hosts_on_rabbitmq.py
kills one of two hosts under 200 jobs; this is the same fault at scale.)"""

import threading
import time

import pytest
from django.db import connection
from django.db.models import Count, Max
from django_celery_results.models import TaskResult

from jobs.models import Job, JobStatus
from jobs.publishing import outbox_relay
from jobs.queues import WORKER_GROUPS, Queue
from tests.helpers import wait_for

pytestmark = pytest.mark.integration

LOAD = 20_000
# A do-nothing task on each queue (tests/testapp/tasks.py for the others).
TASKS = {
    Queue.DEFAULT: "jobs.noop",
    Queue.EMAIL: "testapp.noop_email",
    Queue.IMAGES: "testapp.noop_images",
    Queue.REPORTS: "testapp.noop_reports",
}


RELAYS = 3


def relay_everything(published: list[int], errors: list[BaseException]) -> None:
    """One outbox relay in a thread of its own, until nothing is left.
    Several relays share the work through SKIP LOCKED, as several beat-run
    relays would."""
    try:
        while True:
            count = outbox_relay(grace_seconds=0, batch_size=200)
            published.append(count)
            if count == 0 and not Job.objects.filter(status=JobStatus.PENDING).exists():
                return
    except BaseException as exc:  # surfaced by the test
        errors.append(exc)
    finally:
        connection.close()


def by_status() -> dict:
    return dict(Job.objects.values_list("status").annotate(n=Count("id")).values_list("status", "n"))


def test_twenty_thousand_jobs_across_all_queues_all_succeed_when_a_worker_is_killed_and_restarted_midway(
    start_worker,
):
    queues = {group: ",".join(queue.value for queue in members) for group, members in WORKER_GROUPS.items()}
    general = start_worker(queues=queues["general"], concurrency=2)
    start_worker(queues=queues["heavy"], concurrency=2)

    # Committed as a batch, published by the outbox relay as it would
    # publish anything the on-commit publish missed.
    names = list(TASKS.items())
    Job.objects.bulk_create(
        [Job(task_name=names[i % 4][1], queue=names[i % 4][0].value) for i in range(LOAD)], batch_size=2000
    )
    published: list[int] = []
    errors: list[BaseException] = []
    relays = [threading.Thread(target=relay_everything, args=(published, errors)) for _ in range(RELAYS)]
    began = time.monotonic()
    for relay in relays:
        relay.start()

    wait_for(
        lambda: by_status().get(JobStatus.SUCCESS, 0) >= LOAD // 3,
        timeout=150,
        interval=1,
        what=f"a third of the load to finish (now {by_status()})",
    )
    general.kill_main()  # pool and all, SIGKILL, while the relays still publish
    done_at_kill = by_status().get(JobStatus.SUCCESS, 0)
    assert done_at_kill < LOAD * 2 // 3, "the load was nearly over before the kill"
    start_worker(queues=queues["general"], concurrency=2)

    for relay in relays:
        relay.join(timeout=240)
        assert not relay.is_alive(), "a relay is still publishing after 4 minutes"
    publish_seconds = time.monotonic() - began
    assert not errors, errors
    assert sum(published) == LOAD  # each job published once, by one relay

    wait_for(
        lambda: by_status() == {JobStatus.SUCCESS: LOAD},
        timeout=240,
        interval=1,
        what=f"all {LOAD} jobs to succeed (now {by_status()})",
    )
    assert Job.objects.aggregate(most=Max("attempts"))["most"] <= 2
    assert dict(Job.objects.values_list("queue").annotate(n=Count("id"))) == {q.value: LOAD // 4 for q in Queue}
    assert TaskResult.objects.filter(status="SUCCESS").count() == LOAD
    print(f"published {LOAD} in {publish_seconds:.1f}s; {done_at_kill} done when the worker was killed")
