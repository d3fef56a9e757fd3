"""How many messages a worker holds: one per child, a few more while its
jobs are short (jobs.worker_prefetch), or what the deployment fixed; and the
order it starts them in (jobs.worker_priority)."""

import types

import pytest
from celery import current_app
from kombu.asynchronous.semaphore import LaxBoundedSemaphore
from kombu.common import QoS

from jobs import worker_prefetch, worker_priority
from jobs.queues import SHORT_JOB_PREFETCH_MULTIPLIER, SHORT_JOB_SECONDS, SHORT_JOBS_BEFORE_HOLDING
from jobs.services import enqueue
from tests.helpers import wait_for


def consumer_with_children(children: int):
    """What the policy reads of Celery's consumer: its QoS (kombu's own) and
    its pool's size."""
    applied = []
    qos = QoS(lambda prefetch_count: applied.append(prefetch_count), children)
    return types.SimpleNamespace(qos=qos, pool=types.SimpleNamespace(num_processes=children))


def test_a_worker_holds_more_after_a_run_of_short_jobs_and_one_per_child_after_a_long_one():
    consumer = consumer_with_children(2)
    policy = worker_prefetch.ShortJobPrefetch(consumer)
    short, long = SHORT_JOB_SECONDS / 10, SHORT_JOB_SECONDS * 2

    for _ in range(SHORT_JOBS_BEFORE_HOLDING - 1):
        policy.job_ended(short)
    assert consumer.qos.value == 2
    policy.job_ended(short)
    assert consumer.qos.value == 2 * SHORT_JOB_PREFETCH_MULTIPLIER
    policy.job_ended(short)
    assert consumer.qos.value == 2 * SHORT_JOB_PREFETCH_MULTIPLIER

    policy.job_ended(long)
    assert consumer.qos.value == 2
    # A whole new run of short jobs is needed to hold more again.
    for _ in range(SHORT_JOBS_BEFORE_HOLDING - 1):
        policy.job_ended(short)
    assert consumer.qos.value == 2


def test_a_reconnected_consumer_starts_again_from_one_message_per_child():
    consumer = consumer_with_children(2)
    policy = worker_prefetch.ShortJobPrefetch(consumer)
    for _ in range(SHORT_JOBS_BEFORE_HOLDING):
        policy.job_ended(0)
    assert consumer.qos.value == 2 * SHORT_JOB_PREFETCH_MULTIPLIER

    # Celery gives a consumer that reconnects a new QoS at its initial count.
    consumer.qos = QoS(lambda prefetch_count: None, 2)
    policy.job_ended(SHORT_JOB_SECONDS * 2)
    assert consumer.qos.value == 2
    for _ in range(SHORT_JOBS_BEFORE_HOLDING):
        policy.job_ended(0)
    assert consumer.qos.value == 2 * SHORT_JOB_PREFETCH_MULTIPLIER


def test_the_messages_a_worker_holds_start_highest_priority_first_and_in_arrival_order_within_one():
    # Celery's worker semaphore: one child, busy; what it takes meanwhile waits.
    semaphore = LaxBoundedSemaphore(1)
    started = []

    def take(name: str, priority: int | None) -> None:
        request = types.SimpleNamespace(name=name, delivery_info={"priority": priority})
        semaphore.acquire(lambda request: started.append(request.name), request)

    take("running", 0)
    take("low 1", 0)  # already waiting when the worker's consumer starts
    worker_priority.follow(types.SimpleNamespace(semaphore=semaphore))
    for name, priority in [("low 2", 0), ("high 1", 9), ("medium", 5), ("high 2", 9), ("unset", None), ("low 3", 0)]:
        take(name, priority)
    assert started == ["running"]

    for _ in range(7):
        semaphore.release()
    assert started == ["running", "high 1", "high 2", "medium", "low 1", "low 2", "unset", "low 3"]


def prefetch_count(worker) -> int:
    stats = current_app.control.inspect(destination=[worker.name], timeout=5).stats() or {}
    return stats[worker.name]["prefetch_count"]


def run_all(jobs) -> None:
    for job in jobs:
        wait_for(lambda job=job: job.refresh_from_db() or job.is_finished, timeout=60, what=f"{job} to finish")


@pytest.mark.integration
def test_a_real_worker_holds_more_while_its_jobs_are_short(start_worker):
    worker = start_worker(queues="default", concurrency=2)
    assert prefetch_count(worker) == 2

    run_all([enqueue("jobs.noop") for _ in range(SHORT_JOBS_BEFORE_HOLDING + 5)])
    wait_for(lambda: prefetch_count(worker) == 2 * SHORT_JOB_PREFETCH_MULTIPLIER, timeout=10, what="more held")

    run_all([enqueue("jobs.sleep", SHORT_JOB_SECONDS * 3, 1)])
    wait_for(lambda: prefetch_count(worker) == 2, timeout=10, what="one message per child again")


@pytest.mark.integration
def test_a_multiplier_given_on_the_command_line_is_kept(start_worker):
    worker = start_worker(queues="default", concurrency=2, extra_args=("--prefetch-multiplier", "3"))
    run_all([enqueue("jobs.noop") for _ in range(SHORT_JOBS_BEFORE_HOLDING + 5)])
    assert prefetch_count(worker) == 6


@pytest.mark.integration
def test_a_high_job_overtakes_a_backlog_of_short_jobs_held_several_at_a_time(start_worker):
    """Holding more costs a high job nothing: it overtakes the backlog left
    on the queue, and the messages the worker already holds too."""
    worker = start_worker(queues="default", concurrency=1)
    lows = [enqueue("jobs.sleep", SHORT_JOB_SECONDS / 4, 1, priority="low") for _ in range(120)]
    wait_for(lambda: prefetch_count(worker) == SHORT_JOB_PREFETCH_MULTIPLIER, timeout=60, what="more held")
    high = enqueue("jobs.noop", priority="high")
    run_all([high])
    for low in lows:
        low.refresh_from_db()

    # Started once the high job was on the queue and before it: the low job
    # the child started as a slot for the high one opened, and (on a slow
    # machine) the next. Not the others the worker held: in arrival order
    # they were SHORT_JOB_PREFETCH_MULTIPLIER - 1.
    overtaken_by = [low for low in lows if low.started_at and high.queued_at <= low.started_at < high.started_at]
    assert len(overtaken_by) <= 2 < SHORT_JOB_PREFETCH_MULTIPLIER - 1, worker.read_log()[-2000:]
    assert sum(1 for low in lows if low.started_at is None or low.started_at > high.started_at) > len(lows) // 2
