"""/metrics asking the real broker and a real worker: queue depths from a
passive declare on RabbitMQ, workers from a ping."""

import os
from pathlib import Path
from types import SimpleNamespace

import pytest
from django.conf import settings
from kombu import Connection

from jobs.queues import DEAD_LETTER_QUEUE_NAME
from ops import broker as ops_broker
from tests.helpers import wait_for
from tests.ops.test_metrics import sample, scrape

pytestmark = pytest.mark.integration

DEAD_LETTERS = DEAD_LETTER_QUEUE_NAME[settings.KIT_QUEUE_TYPE]


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


def test_each_worker_reports_the_cpu_and_memory_of_its_main_process_and_pool_children(
    broker, start_worker, admin_client
):
    worker = start_worker(queues="default", concurrency=2)

    samples = scrape(admin_client)

    def used(name, process):
        return sample(samples, name, worker=worker.name, process=process)

    # Measured by the worker itself (psutil) and compared with /proc here.
    main_rss = int(Path(f"/proc/{worker.process.pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    assert 0.5 * main_rss < used("kit_worker_resident_memory_bytes", "main") < 2 * main_rss
    assert used("kit_worker_resident_memory_bytes", "pool") > used("kit_worker_resident_memory_bytes", "main")
    assert used("kit_worker_cpu_seconds_total", "main") > 0
    assert sample(samples, "kit_worker_pool_processes", worker=worker.name) == len(worker.child_pids()) == 2


def test_the_dead_letter_queue_depth_comes_from_rabbitmq_and_reads_zero_when_it_is_not_declared(broker, admin_client):
    with broker.connection_for_write() as connection:
        channel = connection.default_channel
        channel.queue_delete(DEAD_LETTERS)
        assert sample(scrape(admin_client), "kit_dead_letter_messages") == 0

        channel.queue_declare(DEAD_LETTERS, durable=True)
        for body in ("one", "two"):
            channel.basic_publish(
                channel.prepare_message(body.encode()),
                exchange="",
                routing_key=DEAD_LETTERS,
            )
        ops_broker.cache.clear()
        try:
            assert wait_for(
                lambda: (ops_broker.cache.clear(), sample(scrape(admin_client), "kit_dead_letter_messages"))[1] == 2,
                timeout=10,
                what="two dead letters",
            )
        finally:
            channel.queue_delete(DEAD_LETTERS)
