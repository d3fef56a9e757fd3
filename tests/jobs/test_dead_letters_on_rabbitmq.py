"""A message RabbitMQ dead-letters itself (past a quorum queue's delivery
limit, when the kit's own count never ran) ends with its Job DEAD, and stays
in the dead-letter queue for a person to inspect (jobs.maintenance.
jobs_mark_dead_lettered). On the single RabbitMQ node of the machine: a
single-node quorum queue dead-letters exactly as a cluster's does."""

import time

import pytest
from celery import current_app
from django.conf import settings
from django.test import override_settings
from kombu import Connection

from jobs import tasks
from jobs.maintenance import jobs_mark_dead_lettered
from jobs.models import Job, JobStatus
from jobs.queues import (
    DEAD_LETTER_EXCHANGE,
    QUORUM_DELIVERY_LIMIT,
    QUORUM_EXCHANGE,
    Priority,
    Queue,
    QueueType,
    dead_letter_notice_queue,
    dead_letter_queue,
    lane_name,
    quorum_queues,
)
from tests.helpers import wait_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def connection(rabbitmq_vhost):
    with Connection(settings.CELERY_BROKER_URL, connect_timeout=5) as connection:
        yield connection


def _fresh_dead_letter_queues(channel, queue_type: QueueType):
    """The dead-letter queue and the kit's copy of it, declared and empty."""
    queues = []
    for make in (dead_letter_queue, dead_letter_notice_queue):
        queue = make(queue_type)(channel)
        queue.declare()
        queue.purge()
        queues.append(queue)
    return queues


def _depth(channel, name: str) -> int:
    return channel.queue_declare(queue=name, passive=True).message_count


def _hand_back_until_dead_lettered(channel, lane, dead_name: str, *, count: int) -> int:
    """As if every worker that takes a message died before its task
    started: RabbitMQ gets it back each time, and dead-letters it past the
    lane's delivery limit. Returns the number of hand-backs."""
    handed_back = 0
    deadline = time.monotonic() + 20
    while _depth(channel, dead_name) < count and time.monotonic() < deadline:
        if (message := lane.get(no_ack=False)) is not None:
            message.requeue()
            handed_back += 1
    assert _depth(channel, dead_name) == count
    return handed_back


def _medium_lane(channel):
    name = lane_name(Queue.DEFAULT, Priority.MEDIUM, QueueType.QUORUM)
    (lane,) = [queue(channel) for queue in quorum_queues() if queue.name == name]
    lane.declare()
    lane.purge()
    return lane


def _job(status=JobStatus.QUEUED, **fields) -> Job:
    return Job.objects.create(task_name="jobs.noop", queue=Queue.DEFAULT, status=status, **fields)


def test_a_message_past_the_quorum_delivery_limit_marks_its_job_dead_and_stays_in_the_queue(connection):
    channel = connection.channel()
    lane = _medium_lane(channel)
    dead, notices = _fresh_dead_letter_queues(channel, QueueType.QUORUM)
    poison, finished = _job(), _job(status=JobStatus.SUCCESS)
    for job in (poison, finished):
        # A real Celery message, as the kit publishes it: the task id header
        # is the Job id.
        current_app.send_task("jobs.noop", task_id=str(job.id), exchange=QUORUM_EXCHANGE, routing_key=lane.name)

    handed_back = _hand_back_until_dead_lettered(channel, lane, dead.name, count=2)
    assert handed_back == 2 * (QUORUM_DELIVERY_LIMIT + 1)
    assert Job.objects.get(pk=poison.pk).status == JobStatus.QUEUED  # what the issue found
    wait_for(lambda: _depth(channel, notices.name) == 2, timeout=10, what="the kit's copies")

    with override_settings(KIT_QUEUE_TYPE=QueueType.QUORUM):
        assert jobs_mark_dead_lettered() == 1
        poison.refresh_from_db()
        assert poison.status == JobStatus.DEAD and poison.finished_at is not None
        assert poison.error.startswith(
            f"Dead-lettered by RabbitMQ after more than {QUORUM_DELIVERY_LIMIT} deliveries "
            "(x-death: reason delivery_limit, count 1, from queue default.medium)"
        )
        assert "kept in kit.dead.quorum" in poison.error
        assert Job.objects.get(pk=finished.pk).status == JobStatus.SUCCESS  # left alone

        # Both messages are still there for a person (and /metrics); the
        # kit's copies are taken, so the next run has nothing to do.
        assert _depth(channel, dead.name) == 2
        assert _depth(channel, notices.name) == 0
        assert jobs_mark_dead_lettered() == 0


@pytest.mark.integration
def test_a_quorum_mode_worker_declares_the_copy_queue_and_runs_the_marking_as_beat_sends_it(
    connection, worker_env, start_worker
):
    """End to end: a real worker in quorum mode declares the kit's copy of
    the dead letters when it starts, and runs jobs.mark_dead_lettered from
    the lane beat sends it to. It consumes the high and low lanes only, so
    the poison message on the medium lane is left to this test."""
    channel = connection.channel()
    for make in (dead_letter_queue, dead_letter_notice_queue):
        make(QueueType.QUORUM)(channel).delete()
    lane = _medium_lane(channel)
    poison = _job()
    worker_env["KIT_QUEUE_TYPE"] = QueueType.QUORUM.value
    start_worker(
        queues=",".join(lane_name(Queue.DEFAULT, lane_, QueueType.QUORUM) for lane_ in (Priority.HIGH, Priority.LOW))
    )
    dead = dead_letter_queue(QueueType.QUORUM)(channel)
    notices = dead_letter_notice_queue(QueueType.QUORUM)(channel)
    assert _depth(channel, notices.name) == 0  # declared by the worker (a 404 otherwise)

    current_app.send_task("jobs.noop", task_id=str(poison.id), exchange=QUORUM_EXCHANGE, routing_key=lane.name)
    _hand_back_until_dead_lettered(channel, lane, dead.name, count=1)
    entry = settings.CELERY_BEAT_SCHEDULE["jobs-mark-dead-lettered"]
    current_app.send_task(
        entry["task"], exchange=QUORUM_EXCHANGE, routing_key=lane_name(Queue.DEFAULT, Priority.LOW, QueueType.QUORUM)
    )

    wait_for(lambda: Job.objects.get(pk=poison.pk).status == JobStatus.DEAD, timeout=30, what="the job to be DEAD")
    assert "x-death: reason delivery_limit" in Job.objects.get(pk=poison.pk).error
    assert _depth(channel, dead.name) == 1
    assert _depth(channel, notices.name) == 0


def test_classic_mode_reads_its_own_copy_of_kit_dead_in_bounded_batches_and_marks_each_job_once(connection):
    channel = connection.channel()
    dead, notices = _fresh_dead_letter_queues(channel, QueueType.CLASSIC)
    queued, retrying, already_dead = _job(), _job(status=JobStatus.RETRYING), _job(status=JobStatus.DEAD, error="x")
    odd = _job()
    producer = connection.Producer(channel)
    # What RabbitMQ publishes to kit.dlx when a classic queue's policy
    # dead-letters a rejected message; a second copy of the queued job's
    # message (at-least-once), a message of no job, and one with a header
    # RabbitMQ would never write (anyone may publish to kit.dlx).
    x_death = [{"count": 1, "reason": "rejected", "queue": "default", "exchange": "kit", "routing-keys": ["default"]}]
    for task_id, death in [
        *((task_id, x_death) for task_id in (queued.id, retrying.id, already_dead.id, queued.id, "celery-beat-task")),
        (odd.id, 7),
    ]:
        producer.publish(
            {}, exchange=DEAD_LETTER_EXCHANGE, routing_key="default", headers={"id": str(task_id), "x-death": death}
        )
    wait_for(lambda: _depth(channel, notices.name) == 6, timeout=10, what="the kit's copies")

    assert jobs_mark_dead_lettered(limit=2) == 2  # classic is the test settings' mode
    assert _depth(channel, notices.name) == 4
    assert jobs_mark_dead_lettered(limit=2) == 0  # already DEAD, and a repeat
    assert jobs_mark_dead_lettered(limit=2) == 1  # no job, and the odd one
    assert jobs_mark_dead_lettered(limit=2) == 0
    assert _depth(channel, notices.name) == 0
    assert _depth(channel, dead.name) == 6

    statuses = dict(Job.objects.filter(pk__in=[queued.pk, retrying.pk, odd.pk]).values_list("id", "status"))
    assert set(statuses.values()) == {JobStatus.DEAD}
    assert Job.objects.get(pk=queued.pk).error.startswith(
        "Dead-lettered by RabbitMQ (x-death: reason rejected, count 1, from queue default): rejected by a consumer."
    )
    assert Job.objects.get(pk=already_dead.pk).error == "x"
    assert Job.objects.get(pk=odd.pk).error.startswith(
        "Dead-lettered by RabbitMQ (x-death: reason unknown, count ?, from queue ?): "
        "for a reason the kit does not know."
    )


def test_nothing_to_do_where_the_queue_was_never_declared_or_on_the_embedded_broker(connection, tmp_path):
    channel = connection.channel()
    notices = dead_letter_notice_queue(QueueType.CLASSIC)(channel)
    notices.delete()
    job = _job()

    assert jobs_mark_dead_lettered() == 0

    folder = tmp_path / "broker"
    folder.mkdir()
    transport_options = {"data_folder_in": str(folder), "data_folder_out": str(folder)}
    with Connection("filesystem://", transport_options=transport_options) as embedded:
        assert jobs_mark_dead_lettered(connection=embedded) == 0
    assert Job.objects.get(pk=job.pk).status == JobStatus.QUEUED


def test_beat_marks_dead_letters_every_minute_on_the_low_lane_of_the_default_queue():
    entry = settings.CELERY_BEAT_SCHEDULE["jobs-mark-dead-lettered"]
    assert entry["task"] == tasks.mark_dead_lettered.name
    assert entry["schedule"] == 60
    assert entry["options"] == {"priority": 0, "queue": lane_name(Queue.DEFAULT, Priority.LOW, settings.KIT_QUEUE_TYPE)}
