"""/metrics asking the real broker and a real worker: queue depths from a
passive declare on RabbitMQ, workers from a ping."""

from types import SimpleNamespace

import pytest
from kombu import Connection

from ops import broker as ops_broker
from tests.ops.test_metrics import sample, scrape

pytestmark = pytest.mark.integration


def test_queue_depths_and_workers_come_from_rabbitmq_and_the_workers(broker, start_worker, admin_client):
    worker = start_worker(queues="default")
    for _ in range(3):  # nobody consumes `images` here: they stay ready
        broker.send_task("ops.test.nothing", queue="images")

    samples = scrape(admin_client)

    assert sample(samples, "kit_broker_up") == 1
    assert sample(samples, "kit_queue_messages", queue="images") == 3
    assert sample(samples, "kit_queue_consumers", queue="images") == 0
    assert sample(samples, "kit_queue_consumers", queue="default") == 1
    assert sample(samples, "kit_workers_online") == 1
    assert sample(samples, "kit_worker_up", worker=worker.name) == 1


def test_a_broker_that_refuses_connections_reads_as_down(admin_client, monkeypatch):
    app = ops_broker.current_app._get_current_object()
    refusing = SimpleNamespace(
        connection_for_read=lambda **options: Connection("amqp://guest:guest@127.0.0.1:1//", **options),
        control=app.control,
    )
    monkeypatch.setattr(ops_broker, "current_app", refusing)

    samples = scrape(admin_client)

    assert sample(samples, "kit_broker_up") == 0, samples
    assert not [key for key in samples if key[0] == "kit_queue_messages"]


def test_a_queue_nobody_declared_yet_reads_as_empty_and_the_others_still_count(broker, admin_client):
    with broker.connection_for_write() as connection:
        connection.default_channel.queue_delete("images")
    broker.send_task("ops.test.nothing", queue="reports")

    samples = scrape(admin_client)

    assert sample(samples, "kit_queue_messages", queue="images") == 0
    assert sample(samples, "kit_queue_messages", queue="reports") == 1
    assert sample(samples, "kit_broker_up") == 1
