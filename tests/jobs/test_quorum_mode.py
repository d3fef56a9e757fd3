"""Quorum mode's facts (jobs.queues) and the places that read them: the
worker command, Flower's management API URL. Its behaviour on a real
cluster is in tests/reliability/test_quorum_cluster_on_rabbitmq.py."""

import subprocess
import sys

from django.test import override_settings

from jobs.management.commands import flower as flower_command
from jobs.management.commands.worker import Command as WorkerCommand
from jobs.queues import (
    MAX_DELIVERIES,
    WORKER_GROUPS,
    Priority,
    Queue,
    QueueType,
    broker_queue_names,
    lane_name,
    quorum_queue_arguments,
    task_queues,
)
from tests.helpers import REPO


def test_classic_mode_keeps_one_priority_queue_per_kit_queue():
    queues = task_queues(QueueType.CLASSIC)
    assert [queue.name for queue in queues] == [queue.value for queue in Queue]
    assert all(queue.queue_arguments == {"x-max-priority": 9} for queue in queues)
    assert lane_name(Queue.EMAIL, Priority.HIGH, QueueType.CLASSIC) == "email"


def test_quorum_mode_has_a_durable_quorum_queue_per_queue_and_priority_with_no_max_priority():
    queues = task_queues(QueueType.QUORUM)
    assert {queue.name for queue in queues} == {f"{queue.value}.{lane.value}" for queue in Queue for lane in Priority}
    for queue in queues:
        assert queue.durable
        assert queue.exchange.type == "topic"  # native delayed delivery needs it
        assert queue.queue_arguments == quorum_queue_arguments()
    arguments = quorum_queue_arguments()
    assert "x-max-priority" not in arguments
    assert arguments["x-delivery-limit"] > MAX_DELIVERIES  # the kit marks DEAD first
    assert (arguments["x-dead-letter-strategy"], arguments["x-overflow"]) == ("at-least-once", "reject-publish")


def test_a_worker_in_quorum_mode_consumes_every_lane_of_its_group_high_first():
    command = WorkerCommand()
    options = vars(command.create_parser("manage.py", "worker").parse_args(["--group", "general"]))
    with override_settings(KIT_QUEUE_TYPE=QueueType.QUORUM):
        argv = command.build_argv(options)
    queues = argv[argv.index("--queues") + 1].split(",")
    assert queues == broker_queue_names(WORKER_GROUPS["general"], QueueType.QUORUM)
    assert queues[:3] == ["default.high", "default.medium", "default.low"]
    argv = command.build_argv(options)
    assert argv[argv.index("--queues") + 1] == "default,email"  # classic, unchanged


def test_flower_reads_the_management_api_of_the_first_node_of_a_failover_list():
    url = "amqp://kit:s3cret@mq1:5672/kit;amqp://kit:s3cret@mq2:5672/kit;amqp://kit:s3cret@mq3:5672/kit"
    assert flower_command.broker_api_url(url) == "http://kit:s3cret@mq1:15672/api/"


def test_the_settings_take_the_queue_type_from_the_environment_and_refuse_a_bad_one():
    def settings_with(value: str) -> subprocess.CompletedProcess:
        code = (
            "from django.conf import settings; "
            "print(settings.CELERY_TASK_DEFAULT_QUEUE, settings.CELERY_TASK_QUEUE_MAX_PRIORITY)"
        )
        return subprocess.run(
            [sys.executable, "-c", f"import django; django.setup(); {code}"],
            cwd=REPO,
            env={"DJANGO_SETTINGS_MODULE": "config.settings.test", "KIT_QUEUE_TYPE": value, "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
        )

    assert settings_with("quorum").stdout.split() == ["default.medium", "None"]
    assert settings_with("classic").stdout.split() == ["default", "9"]
    refused = settings_with("mirrored")
    assert refused.returncode != 0
    assert "KIT_QUEUE_TYPE='mirrored' is not a queue type (use classic or quorum)." in refused.stderr
