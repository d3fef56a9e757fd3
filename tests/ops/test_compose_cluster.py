"""compose/rabbitmq/definitions-cluster.json, the definitions of a RabbitMQ
cluster in quorum mode, against jobs.queues and against a real RabbitMQ."""

import json
import subprocess

from kombu import Connection

from jobs.queues import (
    DEAD_LETTER_EXCHANGE,
    Queue,
    QueueType,
    broker_queue_names,
    dead_letter_notice_queue,
    dead_letter_queue,
    quorum_queues,
)
from tests.ops.compose_model import COMPOSE_DIR, RABBITMQCTL, definitions_imported

CLUSTER_DEFINITIONS = COMPOSE_DIR / "rabbitmq" / "definitions-cluster.json"


def test_the_cluster_definitions_declare_every_lane_exactly_as_celery_does_in_quorum_mode():
    definitions = json.loads(CLUSTER_DEFINITIONS.read_text())
    declared = {queue["name"]: queue for queue in definitions["queues"]}
    expected_queues = [
        *quorum_queues(),
        dead_letter_queue(QueueType.QUORUM),
        dead_letter_notice_queue(QueueType.QUORUM),
    ]
    assert set(declared) == {queue.name for queue in expected_queues}
    assert set(declared) >= set(broker_queue_names(list(Queue), QueueType.QUORUM))
    for queue in expected_queues:
        expected = {"durable": True, "auto_delete": False, "arguments": queue.queue_arguments}
        assert {key: declared[queue.name][key] for key in expected} == expected, queue.name
        assert "x-max-priority" not in declared[queue.name]["arguments"]
        binding = {"source": queue.exchange.name, "destination": queue.name, "routing_key": queue.routing_key}
        assert any(binding.items() <= item.items() for item in definitions["bindings"]), binding
    exchanges = {item["name"]: item for item in definitions["exchanges"]}
    for exchange in {queue.exchange for queue in expected_queues}:
        assert (exchanges[exchange.name]["type"], exchanges[exchange.name]["durable"]) == (exchange.type, True)
    for queue in quorum_queues():
        assert queue.queue_arguments["x-dead-letter-exchange"] == DEAD_LETTER_EXCHANGE.name


def test_rabbitmq_imports_the_cluster_definitions_and_celery_declares_the_same_queues_over_them():
    """A declare with any other argument would be refused (406
    PRECONDITION_FAILED): declaring Celery's quorum-mode queues over the
    imported ones proves they match. One node is enough for a quorum queue."""
    with definitions_imported(CLUSTER_DEFINITIONS, prefix="kit-test-cluster-defs") as vhost:
        with Connection(f"amqp://guest:guest@127.0.0.1:5672/{vhost}", connect_timeout=5) as connection:
            channel = connection.channel()
            for queue in [
                *quorum_queues(),
                dead_letter_queue(QueueType.QUORUM),
                dead_letter_notice_queue(QueueType.QUORUM),
            ]:
                queue(channel).declare()
        listed = subprocess.run(
            [RABBITMQCTL, "-q", "list_queues", "-p", vhost, "name", "type", "--no-table-headers"],
            capture_output=True,
            text=True,
        )
        types = dict(line.split("\t") for line in listed.stdout.strip().splitlines())
        assert set(types.values()) == {"quorum"}, types
