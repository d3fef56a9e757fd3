"""The kit in quorum mode on a three-node RabbitMQ cluster of the suite's own
(tests/reliability/rabbitmq_cluster.py): a node SIGKILLed under load and
while the web path publishes, priorities through the lanes, a poison
message, countdowns and retries with backoff."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest
from django.db import connection
from django.db.models import Count, Max
from django_celery_results.models import TaskResult

from jobs.models import Job, JobStatus
from jobs.publishing import outbox_relay
from jobs.queues import (
    SHORT_JOB_PREFETCH_MULTIPLIER,
    Priority,
    Queue,
    QueueType,
    broker_queue_names,
    dead_letter_queue,
    lane_name,
)
from jobs.services import enqueue, job_enqueue_many
from tests.helpers import REPO, WorkerProcess, wait_for

pytestmark = pytest.mark.integration

ALL_LANES = ",".join(broker_queue_names(list(Queue), QueueType.QUORUM))
DEFAULT_LANES = ",".join(broker_queue_names([Queue.DEFAULT], QueueType.QUORUM))
# A do-nothing task on each queue (tests/testapp/tasks.py).
NOOPS = {
    Queue.DEFAULT: "jobs.noop",
    Queue.EMAIL: "testapp.noop_email",
    Queue.IMAGES: "testapp.noop_images",
    Queue.REPORTS: "testapp.noop_reports",
}


@pytest.fixture
def start_cluster_worker(on_quorum_cluster, worker_env, tmp_path):
    """start_cluster_worker(first_node=i) -> a worker whose failover list
    begins with node i, so two workers sit on different nodes."""
    workers: list[WorkerProcess] = []

    def start(*, first_node: int = 0, queues: str = ALL_LANES, concurrency: int = 2) -> WorkerProcess:
        nodes = on_quorum_cluster.nodes
        urls = [node.url for node in nodes[first_node:] + nodes[:first_node]]
        env = {**worker_env, "CELERY_BROKER_URL": ";".join(urls)}
        worker = WorkerProcess(queues=queues, concurrency=concurrency, log_dir=tmp_path, env=env)
        workers.append(worker)
        return worker.start(timeout=90)

    yield start
    for worker in workers:
        worker.stop()


def by_status(jobs=None) -> dict:
    rows = Job.objects.all() if jobs is None else Job.objects.filter(pk__in=[job.pk for job in jobs])
    return dict(rows.values_list("status").annotate(n=Count("id")).values_list("status", "n"))


def relay_until_nothing_pending(published: list[int], errors: list[BaseException]) -> None:
    """The outbox relay, as beat runs it, until no job is PENDING."""
    try:
        while Job.objects.filter(status=JobStatus.PENDING).exists():
            published.append(outbox_relay(grace_seconds=0, batch_size=200))
    except BaseException as exc:  # surfaced by the test
        errors.append(exc)
    finally:
        connection.close()


def busiest_queue_and_leader(cluster) -> tuple[str, str]:
    done = cluster.nodes[-1].ctl("list_queues", "name", "messages", "leader", "--no-table-headers")
    assert done.returncode == 0, done.stderr
    rows = [line.split("\t") for line in done.stdout.splitlines()]
    kit = [(int(messages), name, leader) for name, messages, leader in rows if name.split(".")[0] in set(Queue)]
    _, name, leader = max(kit)
    return name, leader


def test_three_thousand_jobs_all_succeed_when_the_node_leading_the_busiest_queue_is_killed(
    on_quorum_cluster, start_cluster_worker
):
    cluster = on_quorum_cluster
    load = 3000
    workers = [start_cluster_worker(first_node=0), start_cluster_worker(first_node=1)]
    # Each worker logs the node it connected to: two different ones.
    assert [f":{cluster.nodes[i].port}//" in worker.read_log() for i, worker in enumerate(workers)] == [True, True]
    queues, priorities = list(Queue), list(Priority)
    Job.objects.bulk_create(
        [
            Job(task_name=NOOPS[queues[i % 4]], queue=queues[i % 4].value, priority=priorities[i // 4 % 3].value)
            for i in range(load)
        ],
        batch_size=1000,
    )
    published: list[int] = []
    errors: list[BaseException] = []
    relay = threading.Thread(target=relay_until_nothing_pending, args=(published, errors))
    relay.start()

    wait_for(
        lambda: by_status().get(JobStatus.SUCCESS, 0) >= load // 10,
        timeout=180,
        interval=0.5,
        what=f"a tenth of the load to finish (now {by_status()})",
    )
    queue, leader = busiest_queue_and_leader(cluster)
    # What the workers hold unacknowledged at most: a consumer per lane,
    # each with a prefetch of its concurrency, times what a worker holds
    # while its jobs are short (jobs.worker_prefetch).
    in_flight_bound = (
        len(workers) * len(broker_queue_names(list(Queue), QueueType.QUORUM)) * 2 * SHORT_JOB_PREFETCH_MULTIPLIER
    )
    victim = cluster.node(leader)
    victim.kill()
    done_at_kill = by_status().get(JobStatus.SUCCESS, 0)
    killed_at = time.monotonic()
    assert done_at_kill < load * 3 // 4, "the load was nearly over before the kill"

    relay.join(timeout=300)
    assert not relay.is_alive(), "the relay is still publishing after 5 minutes"
    assert not errors, errors
    wait_for(
        lambda: by_status() == {JobStatus.SUCCESS: load},
        timeout=300,
        interval=1,
        what=f"all {load} jobs to succeed (now {by_status()})",
    )
    recovered_seconds = time.monotonic() - killed_at
    ran_twice = Job.objects.filter(attempts__gt=1).count()
    assert ran_twice <= in_flight_bound, ran_twice
    assert Job.objects.aggregate(most=Max("attempts"))["most"] <= 2
    assert sum(published) >= load  # a publish whose confirm was lost is relayed again
    publishes = sum(published)
    assert TaskResult.objects.filter(status="SUCCESS").count() == load
    for worker in workers:  # recovered by themselves, never restarted
        assert worker.process.poll() is None, worker.read_log()[-3000:]

    # The killed node starts again, rejoins, and its queue replicas catch up.
    victim.start()
    victim.await_startup()
    wait_for(
        lambda: (
            cluster.running_nodes(cluster.nodes[2 if victim is cluster.nodes[0] else 0])
            == {node.name for node in cluster.nodes}
        ),
        timeout=60,
        what=f"{victim.name} to rejoin",
    )
    wait_for(
        lambda: cluster.queue_members_online(queue, via=victim) == 3,
        timeout=60,
        what=f"{queue} to have its three members online",
    )
    # Both workers are back on the lane this batch goes to, by themselves:
    # the one that was connected to the killed node reconnects with kombu's
    # backoff, which may still be running when the node is back.
    high_lane = lane_name(Queue.DEFAULT, Priority.HIGH, QueueType.QUORUM)
    survivor = cluster.nodes[2 if victim is cluster.nodes[0] else 0]
    wait_for(
        lambda: cluster.queue_consumers(high_lane, via=survivor) == 2,
        timeout=120,
        what=f"both workers to consume {high_lane} again",
    )
    # Committed (autocommit) and published at once; the first publish over a
    # pooled connection to the node that died fails, and what it leaves
    # PENDING goes out with the relay, as beat would run it.
    batch = job_enqueue_many(task_name="jobs.noop", calls=[((), {})] * 300, priority="high")
    left_pending = by_status(batch).get(JobStatus.PENDING, 0)
    relay_until_nothing_pending(published, errors)
    assert not errors, errors
    wait_for(
        lambda: by_status(batch) == {JobStatus.SUCCESS: 300},
        timeout=120,
        interval=0.5,
        what=f"the batch after the rejoin to succeed (now {by_status(batch)})",
    )
    served_by = set(Job.objects.filter(pk__in=[job.pk for job in batch]).values_list("worker", flat=True))
    assert len(served_by) == 2, served_by  # both workers still consume
    print(
        f"\nquorum load: killed {victim.name} (leader of {queue}) with {done_at_kill}/{load} done; "
        f"all {load} SUCCESS {recovered_seconds:.1f}s later; {publishes} publishes; {ran_twice} ran twice "
        f"(bound {in_flight_bound}); after the rejoin {left_pending} of 300 relayed"
    )


def test_jobs_published_from_the_web_path_while_a_node_is_killed_are_confirmed_or_relayed_never_lost(
    on_quorum_cluster, start_cluster_worker, admin_client
):
    """Requests to the API, one job or a bulk of 100 at a time, while the
    node the web process publishes through (the head of its failover list)
    is SIGKILLed: every request answers 202; each job is confirmed (the
    on-commit publish retries once, on the next node) or stays PENDING
    (its confirm never came: a bulk waiting for its confirms when the node
    died) and the relay publishes it; the relay publishes nothing that was
    confirmed; every job runs once."""
    cluster = on_quorum_cluster
    # The worker sits on the third node, away from the one killed.
    worker = start_cluster_worker(first_node=2, queues=DEFAULT_LANES)
    requests, bulk_size, kill_at = 40, 100, 10
    outcomes: dict = {}
    killer = threading.Thread(target=cluster.nodes[0].kill)
    for i in range(requests):
        if i == kill_at:
            killer.start()
        priority = ("high", "medium", "low")[i % 3]
        if i % 2:
            body = {"task": "jobs.noop", "calls": [{"args": []}] * bulk_size, "priority": priority}
            response = admin_client.post("/api/jobs/bulk/", data=json.dumps(body), content_type="application/json")
            ids = response.json()["ids"] if response.status_code == 202 else []
        else:
            body = {"task": "jobs.noop", "args": [], "priority": priority}
            response = admin_client.post("/api/jobs/", data=json.dumps(body), content_type="application/json")
            ids = [response.json()["id"]] if response.status_code == 202 else []
        assert response.status_code == 202, response.content
        # What the on-commit publish left: QUEUED (or further) or PENDING.
        outcomes.update(Job.objects.filter(pk__in=ids).values_list("id", "status"))
    killer.join(timeout=60)
    total = len(outcomes)
    assert total == requests // 2 * (bulk_size + 1)

    pending = {pk for pk, status in outcomes.items() if status == JobStatus.PENDING}
    relayed = 0
    while Job.objects.filter(status=JobStatus.PENDING).exists():
        relayed += outbox_relay(grace_seconds=0)
    # The relay publishes what stayed PENDING, and nothing that was confirmed.
    assert relayed == len(pending)

    wait_for(
        lambda: by_status() == {JobStatus.SUCCESS: total},
        timeout=180,
        interval=0.5,
        what=f"every job to succeed (now {by_status()})",
    )
    assert Job.objects.filter(attempts=1).count() == total  # none ran twice
    assert TaskResult.objects.filter(status="SUCCESS").count() == total
    # A message the broker took but whose confirm was lost with the node is
    # published again by the relay: its second copy is acknowledged without
    # running (the job is finished). Counted from the worker's receipts.
    received = Counter(
        line.split("[")[1].split("]")[0] for line in worker.read_log().splitlines() if "] received" in line
    )
    assert set(received) == {str(pk) for pk in outcomes}
    delivered_twice = sum(1 for n in received.values() if n > 1)
    assert delivered_twice <= len(pending)
    cluster.nodes[0].start()
    cluster.nodes[0].await_startup()
    print(
        f"\nweb path during a node kill: {total - len(pending)} of {total} confirmed at once, "
        f"{len(pending)} left PENDING and relayed; {delivered_twice} delivered twice (a lost confirm), "
        f"every job ran once"
    )


@pytest.mark.parametrize("mode", ["classic", "quorum"])
def test_a_high_priority_job_starts_quickly_behind_two_thousand_low_ones(mode, request, start_worker, tmp_path):
    backlog = 2000
    if mode == "quorum":
        request.getfixturevalue("on_quorum_cluster")
        start = request.getfixturevalue("start_cluster_worker")
        worker = start(queues=DEFAULT_LANES, concurrency=2)
    else:
        worker = start_worker(queues=Queue.DEFAULT.value, concurrency=2)
    lows = job_enqueue_many(task_name="testapp.block", calls=[((0.01,), {})] * backlog, priority="low")
    wait_for(
        lambda: by_status(lows).get(JobStatus.SUCCESS, 0) >= 20,
        timeout=60,
        what="the worker to be busy with the backlog",
    )
    enqueued_at = time.time()
    high = enqueue("jobs.noop", priority="high")
    wait_for(lambda: Job.objects.get(pk=high.pk).started_at, timeout=60, what="the high job to start")
    high.refresh_from_db()
    wait_seconds = high.started_at.timestamp() - enqueued_at
    low_left = Job.objects.filter(pk__in=[job.pk for job in lows], started_at__isnull=True).count()
    print(f"\n{mode}: high-priority job started {wait_seconds:.3f}s after enqueue, {low_left} low jobs still waiting")
    assert low_left > backlog // 2, worker.read_log()[-2000:]
    assert wait_seconds < 2, wait_seconds


def test_a_task_that_kills_its_worker_every_time_ends_dead_in_quorum_mode(on_quorum_cluster, start_cluster_worker):
    from ops import broker

    start_cluster_worker(queues=DEFAULT_LANES, concurrency=1)
    poison = enqueue("testapp.kill_worker_always")
    healthy = enqueue("jobs.noop")

    wait_for(
        lambda: by_status([poison, healthy]) == {JobStatus.DEAD: 1, JobStatus.SUCCESS: 1},
        timeout=90,
        what=f"the poison job to be DEAD and the other to succeed (now {by_status([poison, healthy])})",
    )
    poison.refresh_from_db()
    assert poison.attempts == 4  # three deliveries ran and died; the fourth was refused
    assert "Started 3 times without finishing" in poison.error
    # The kit decided before the queue's own delivery limit: nothing was
    # dead-lettered, and /metrics shows the dead-letter queue (empty).
    depths = broker._queue_depths()
    assert depths[dead_letter_queue(QueueType.QUORUM).name].messages == 0
    assert set(depths) >= {queue.value for queue in Queue}


def test_countdowns_and_retries_with_backoff_run_in_quorum_mode(on_quorum_cluster, start_cluster_worker):
    """Celery's native delayed delivery carries both on quorum queues: a
    countdown waits on the broker, not in a worker holding the message."""
    start_cluster_worker(queues=DEFAULT_LANES, concurrency=1)
    delayed = enqueue("jobs.noop", countdown=3)
    retried = enqueue("testapp.transient_then_ok", 2)  # fails twice, retried with backoff

    wait_for(
        lambda: by_status([delayed, retried]) == {JobStatus.SUCCESS: 2},
        timeout=90,
        what=f"the delayed and the retried job to succeed (now {by_status([delayed, retried])})",
    )
    delayed.refresh_from_db()
    retried.refresh_from_db()
    assert (delayed.started_at - delayed.created_at).total_seconds() >= 2.5
    assert TaskResult.objects.get(task_id=str(retried.id)).result == "2"


def test_beat_keeps_scheduling_the_relay_through_a_node_kill(
    on_quorum_cluster, start_cluster_worker, worker_env, tmp_path
):
    """Beat is given every node too: after the node it publishes through
    dies, its next runs of the outbox relay reach the broker through
    another, and a job left PENDING is published and runs."""
    cluster = on_quorum_cluster
    worker = start_cluster_worker(first_node=2, queues=DEFAULT_LANES, concurrency=1)
    env = {
        **worker_env,
        "CELERY_BROKER_URL": ";".join(node.url for node in cluster.nodes),
        "JOBS_RELAY_INTERVAL_SECONDS": "1",
    }
    log_path = tmp_path / "beat.log"
    with open(log_path, "ab") as log:
        beat = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "config", "beat", "-l", "info", "-s", str(tmp_path / "schedule")],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def relay_runs() -> int:
        # Not a job (it would fill the job table): counted in the worker's log.
        return sum(1 for line in worker.read_log().splitlines() if "jobs.relay_outbox[" in line and "succeeded" in line)

    try:
        wait_for(relay_runs, timeout=90, what=f"beat's first relay run (log: {log_path})")
        cluster.nodes[0].kill()
        runs_at_kill = relay_runs()
        left = Job.objects.create(task_name="jobs.noop", queue=Queue.DEFAULT.value)  # committed, never published
        wait_for(
            lambda: Job.objects.get(pk=left.pk).status == JobStatus.SUCCESS,
            timeout=90,
            what=f"a beat-run relay after the kill to publish the PENDING job (log: {log_path})",
        )
        assert relay_runs() > runs_at_kill
        assert beat.poll() is None, log_path.read_text()[-3000:]
    finally:
        os.killpg(beat.pid, signal.SIGTERM)
        beat.wait(timeout=30)
        cluster.nodes[0].start()
        cluster.nodes[0].await_startup()
