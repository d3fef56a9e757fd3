"""The kit's adapters over its dependencies' internals (upstream/), run
against the pinned versions: a dependency that moves one of these shapes
fails here, by name, before it can make the kit silently wrong."""

import uuid

import amqp
import pytest
from celery import current_app
from celery.app.task import Context
from django.db import connection
from django.db.models import Count

from jobs.models import Job
from upstream import UpstreamChanged
from upstream.amqp import pipeline_confirms
from upstream.celery import (
    DELAYED_DELIVERY_STEP,
    check_db_reuse_is_honoured,
    check_delayed_delivery_binds_queues,
    check_request_stop_flags,
    revoked_elsewhere,
    steps_before,
    steps_with,
)
from upstream.celery_results import EXTENDED_PROPERTIES, extended_properties, request_meta
from upstream.django_db import compiled_sql, selected_names, skip_next_health_check, values_shape, yields_models


def test_a_confirm_mode_channel_publishes_without_waiting_and_every_confirm_is_still_counted(broker):
    acked = []
    with current_app.connection_for_write() as conn:
        channel = conn.channel()
        queue = f"upstream-check-{uuid.uuid4()}"
        channel.queue_declare(queue, auto_delete=True)
        published = pipeline_confirms(channel)
        channel.events["basic_ack"].add(lambda tag, multiple: acked.append((tag, multiple)))
        for number in range(5):
            channel.basic_publish(amqp.Message(str(number)), exchange="", routing_key=queue)
        while not acked or max(tag for tag, _ in acked) < 5:
            conn.drain_events(timeout=10)
        assert published.count == 5
        assert channel.queue_declare(queue, passive=True).message_count == 5
        channel.close()


def test_the_confirm_adapter_refuses_a_channel_of_another_shape():
    with pytest.raises(UpstreamChanged, match="amqp changed"):
        pipeline_confirms(object())


def test_the_result_backend_helpers_give_the_task_result_columns_the_kit_writes():
    backend = current_app.backend
    request = Context(
        id=str(uuid.uuid4()),
        task="jobs.noop",
        args=[1],
        kwargs={"a": 2},
        argsrepr="[1]",
        kwargsrepr="{'a': 2}",
        hostname="worker@here",
        meta={"note": "x"},
    )
    values = extended_properties(backend, request, "Traceback ...")
    assert set(values) == EXTENDED_PROPERTIES
    assert values["task_name"] == "jobs.noop" and values["worker"] == "worker@here"
    assert request_meta(backend, request) == {"note": "x"}
    # Every column the helpers fill is a TaskResult column the kit's upsert writes.
    assert EXTENDED_PROPERTIES <= set(backend._column_names())


def test_celery_still_reads_the_database_reuse_setting():
    check_db_reuse_is_honoured(current_app)


def test_a_connection_can_skip_its_next_health_check(db):
    connection.ensure_connection()
    skip_next_health_check(connection)
    assert connection.health_check_done is True


def test_querysets_tell_their_shape_names_and_sql(db):
    jobs = Job.objects.all()
    assert yields_models(jobs) and values_shape(jobs) is None
    assert values_shape(jobs.values("id")) == "dict"
    assert values_shape(jobs.values_list("id", flat=True)) == "tuple"
    annotated = jobs.values("queue").annotate(n=Count("id"))
    assert selected_names(annotated) == ["queue", "n"]
    sql, params = compiled_sql(jobs.filter(queue="images").values_list("id", "status"))
    assert sql.startswith("SELECT") and params == ("images",)
    assert compiled_sql(jobs.filter(pk__in=[]).values("id")) is None


def test_the_kits_worker_consumer_replaces_celerys_delayed_delivery_step():
    from celery.worker.consumer import Consumer

    from jobs.worker_consumer import KitConsumer

    check_delayed_delivery_binds_queues()
    assert DELAYED_DELIVERY_STEP in Consumer.Blueprint.default_steps
    assert "jobs.worker_consumer:KitQueuesDelayedDelivery" in KitConsumer.Blueprint.default_steps
    assert DELAYED_DELIVERY_STEP not in KitConsumer.Blueprint.default_steps
    with pytest.raises(UpstreamChanged, match="no step"):
        steps_with(["celery.worker.consumer.tasks:Tasks"], DELAYED_DELIVERY_STEP, "x:Y")


def test_the_worker_request_still_has_the_flags_the_kit_reads():
    check_request_stop_flags()


def test_a_cancelled_job_read_from_the_database_is_in_the_workers_revoked_set():
    from celery.worker import state

    job_id = str(uuid.uuid4())
    revoked_elsewhere([job_id])
    assert job_id in state.revoked


def test_a_step_is_placed_before_the_one_named_or_refused_if_there_is_none():
    assert steps_before(["a:A", "b:B"], "b:B", "x:X") == ["a:A", "x:X", "b:B"]
    with pytest.raises(UpstreamChanged, match="no step"):
        steps_before(["a:A"], "b:B", "x:X")


def test_psycopg_turns_placeholders_and_values_into_what_libpq_takes(db):
    from psycopg import pq

    from upstream.psycopg import libpq_query

    connection.ensure_connection()
    query, values, types, formats = libpq_query(
        connection.connection, "SELECT %s::int, %b::uuid[]", [7, [uuid.UUID(int=1), uuid.UUID(int=2)]]
    )
    assert query == b"SELECT $1::int, $2::uuid[]"
    assert len(values) == len(types) == len(formats) == 2
    assert formats[1] == pq.Format.BINARY
    assert all(isinstance(value, bytes | bytearray | memoryview) for value in values)


def test_kombus_semaphore_takes_another_holder_for_its_waiters_those_waiting_included():
    from collections import deque

    from kombu.asynchronous.semaphore import LaxBoundedSemaphore

    from upstream.kombu import replace_waiters, waiters

    semaphore = LaxBoundedSemaphore(1)
    started = []
    semaphore.acquire(started.append, 1)
    semaphore.acquire(started.append, 2)
    holder = deque()
    replace_waiters(semaphore, holder)
    assert waiters(semaphore) is holder
    semaphore.acquire(started.append, 3)
    assert list(holder) == [(started.append, (2,), {}), (started.append, (3,), {})]
    semaphore.release()
    semaphore.release()
    assert started == [1, 2, 3]


def test_the_semaphore_adapter_refuses_an_object_of_another_shape():
    from upstream.kombu import replace_waiters

    with pytest.raises(UpstreamChanged, match="kombu"):
        replace_waiters(object(), [])
