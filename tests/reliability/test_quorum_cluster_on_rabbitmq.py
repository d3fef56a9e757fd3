"""The kit in quorum mode on a three-node RabbitMQ cluster of the suite's own
(tests/reliability/rabbitmq_cluster.py): a node SIGKILLed under load and
while the web path publishes, priorities through the lanes, a poison
message, countdowns and retries with backoff."""

import threading
import time
from collections import Counter

import pytest
from django.db import connection, transaction
from django.db.models import Count, Max
from django_celery_results.models import TaskResult

from jobs.models import Job, JobStatus
from jobs.publishing import outbox_relay
from jobs.queues import Priority, Queue, QueueType, broker_queue_names, dead_letter_queue
from jobs.services import enqueue, job_enqueue_many
from tests.helpers import WorkerProcess, wait_for

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
    via = next(node for node in cluster.nodes if node.ctl("await_startup", "--timeout", "5").returncode == 0)
    done = via.ctl("list_queues", "name", "messages", "leader", "--no-table-headers")
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
        lambda: by_status().get(JobStatus.SUCCESS, 0) >= load // 4,
        timeout=180,
        interval=0.5,
        what=f"a quarter of the load to finish (now {by_status()})",
    )
    queue, leader = busiest_queue_and_leader(cluster)
    # What the workers hold unacknowledged at most: a consumer per lane,
    # each with a prefetch of its concurrency.
    in_flight_bound = len(workers) * len(broker_queue_names(list(Queue), QueueType.QUORUM)) * 2
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
    on_quorum_cluster, start_cluster_worker
):
    cluster = on_quorum_cluster
    total = 150
    # The worker sits on the third node, the test process publishes through
    # the first (the head of its failover list), which is killed.
    worker = start_cluster_worker(first_node=2, queues=DEFAULT_LANES)
    outcomes: dict = {}
    kill_at = total // 3
    for i in range(total):
        if i == kill_at:
            killer = threading.Thread(target=cluster.nodes[0].kill)
            killer.start()
        with transaction.atomic():
            job = enqueue("jobs.noop", priority=("high", "medium", "low")[i % 3])
        job.refresh_from_db(fields=["status"])  # what the on-commit publish left
        outcomes[job.pk] = job.status
    killer.join(timeout=60)
    counts = Counter(outcomes.values())
    assert set(counts) <= {JobStatus.QUEUED, JobStatus.PENDING, JobStatus.STARTED, JobStatus.SUCCESS}, counts

    pending = [pk for pk, status in outcomes.items() if status == JobStatus.PENDING]
    relayed = 0
    while Job.objects.filter(status=JobStatus.PENDING).exists():
        relayed += outbox_relay(grace_seconds=0)
    # The relay publishes what stayed PENDING, and nothing that was confirmed.
    assert relayed == len(pending)

    wait_for(
        lambda: by_status(Job.objects.all()) == {JobStatus.SUCCESS: total},
        timeout=120,
        interval=0.5,
        what=f"every job to succeed (now {by_status()})",
    )
    assert Job.objects.filter(attempts=1).count() == total  # none ran twice
    received = Counter(
        line.split("[")[1].split("]")[0] for line in worker.read_log().splitlines() if "] received" in line
    )
    twice = [job_id for job_id, n in received.items() if n > 1]
    assert not twice, twice  # none published (nor delivered) twice
    cluster.nodes[0].start()
    cluster.nodes[0].await_startup()
    print(
        f"\nweb path during a node kill: {total - len(pending)} confirmed at once, "
        f"{len(pending)} left PENDING and relayed, {total} SUCCESS"
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
