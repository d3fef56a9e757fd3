"""Flower as `manage.py flower` runs it outside development: behind a login,
watching a real worker on RabbitMQ, with its Broker tab reading RabbitMQ's
management API."""

import base64
import urllib.error
import urllib.request

import pytest
from django.core.management.base import CommandError

from jobs.management.commands.flower import BROKER_API_ENV, broker_api_configure, broker_api_url
from jobs.models import Job, JobStatus
from jobs.services import enqueue
from tests.helpers import wait_for
from tests.ops.conftest import FLOWER_LOGIN
from tests.ops.http import http_get

pytestmark = pytest.mark.integration

PROTECTED = ("/", "/workers", "/tasks", "/broker", "/api/workers", "/api/tasks", "/api/queues/length")


def test_the_management_api_is_derived_from_the_broker_url():
    assert broker_api_url("amqp://kit:p%40ss@rabbitmq:5672/kit") == "http://kit:p%40ss@rabbitmq:15672/api/"
    assert broker_api_url("amqps://kit:pw@mq.example.com/kit") == "https://kit:pw@mq.example.com:15671/api/"
    assert broker_api_url("amqp://localhost//") == "http://guest:guest@localhost:15672/api/"
    assert broker_api_url("filesystem://") is None


def test_an_explicit_management_api_wins_and_must_be_http(monkeypatch, settings):
    settings.CELERY_BROKER_URL = "amqp://kit:pw@rabbitmq:5672/kit"
    monkeypatch.setenv(BROKER_API_ENV, "")  # unset; restored (to absent) after the test
    assert broker_api_configure() == "http://kit:pw@rabbitmq:15672/api/"
    monkeypatch.setenv(BROKER_API_ENV, "https://monitor:pw@mq-admin.internal/api/")
    assert broker_api_configure() == "https://monitor:pw@mq-admin.internal/api/"
    monkeypatch.setenv(BROKER_API_ENV, "amqp://kit:pw@rabbitmq:5672/kit")
    with pytest.raises(CommandError, match=BROKER_API_ENV):
        broker_api_configure()


def test_flower_refuses_anonymous_and_wrong_logins_on_every_page_and_api(flower):
    for path in PROTECTED:
        assert http_get(flower.url + path)[0] == 401, path
        assert http_get(flower.url + path, login=(FLOWER_LOGIN[0], "wrong"))[0] == 401, path


def test_flower_shows_the_worker_its_finished_task_and_the_queues_from_rabbitmq(flower, start_worker):
    worker = start_worker()
    job = enqueue("jobs.sleep", 0.1, 2)
    wait_for(lambda: Job.objects.get(pk=job.pk).status == JobStatus.SUCCESS, what="the job to succeed")

    def workers():
        status, body = http_get(f"{flower.url}/api/workers?refresh=1", login=FLOWER_LOGIN)
        return status == 200 and worker.name in body and body

    listed = wait_for(workers, timeout=20, interval=1, what="Flower to list the worker")
    assert listed[worker.name]["stats"]["pool"]["max-concurrency"] == 1

    def task():
        status, body = http_get(f"{flower.url}/api/tasks", login=FLOWER_LOGIN)
        return status == 200 and body.get(str(job.pk), {}).get("state") == "SUCCESS" and body[str(job.pk)]

    seen = wait_for(task, timeout=20, interval=0.5, what="Flower to show the task as succeeded")
    assert (seen["name"], seen["worker"]) == ("jobs.sleep", worker.name)

    # The Broker tab: Flower reads the queues from RabbitMQ's management API,
    # whose figures are sampled every few seconds (so no exact count here).
    def default_queue():
        status, body = http_get(f"{flower.url}/api/queues/length", login=FLOWER_LOGIN)
        queues = {queue["name"]: queue for queue in body["active_queues"]} if status == 200 else {}
        return "messages" in queues.get("default", {}) and queues["default"]

    queue = wait_for(default_queue, timeout=20, interval=1, what="Flower's Broker tab to show the default queue")
    assert isinstance(queue["messages"], int)
    assert queue["arguments"] == {"x-max-priority": 9}
    status, page = http_get(f"{flower.url}/broker", login=FLOWER_LOGIN)
    assert status == 200 and "default" in page


@pytest.mark.parametrize("host", ["attacker.example", "attacker.example:5555", "127.0.0.1.nip.io", "10.0.0.5"])
def test_flower_refuses_a_host_header_that_is_not_its_own_even_with_the_login(flower, host):
    """A page on another site that points its own name at 127.0.0.1 (DNS
    rebinding) sends its own Host header: Flower answers it nothing."""

    def get(host_header: str, path: str = "/api/workers") -> int:
        request = urllib.request.Request(f"{flower.url}{path}", headers={"Host": host_header})
        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(FLOWER_LOGIN).encode()).decode())
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code

    assert get(host) == 400
    assert get(host, "/") == 400
    assert get(host, "/healthcheck") == 200  # probes carry their own Host; it says only "OK"
    assert get(f"localhost:{flower.port}") == 200
    assert get(f"127.0.0.1:{flower.port}") == 200
