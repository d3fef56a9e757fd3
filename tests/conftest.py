"""Fixtures for tests on the real services.

PostgreSQL and RabbitMQ must be running (.ci/run starts them); a missing
service fails the run, it never skips tests. Each run gets an empty RabbitMQ
vhost, so queues are declared with the arguments this code expects and no
message survives from an earlier run.
"""

import os
import shutil
import socket
import subprocess
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from django.conf import settings

from tests.helpers import REPO, WorkerProcess, test_database_url

ARTIFACTS = REPO / "test-artifacts"


def _require(host: str, port: int, service: str, how: str) -> None:
    try:
        socket.create_connection((host, port), timeout=3).close()
    except OSError as exc:
        pytest.exit(f"{service} is not reachable on {host}:{port} ({exc}). Start it: {how}", returncode=3)


@pytest.fixture(scope="session", autouse=True)
def real_services():
    _require(
        "127.0.0.1", 5432, "PostgreSQL", "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
    )
    _require("127.0.0.1", 5672, "RabbitMQ", "rabbitmq-server -detached")


@pytest.fixture(scope="session")
def rabbitmq_vhost(real_services) -> str:
    """A fresh vhost for this run, named in the test settings' broker URL."""
    vhost = unquote(urlparse(settings.CELERY_BROKER_URL).path.lstrip("/"))
    rabbitmqctl = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    subprocess.run([rabbitmqctl, "-q", "delete_vhost", vhost], capture_output=True)
    subprocess.run([rabbitmqctl, "-q", "add_vhost", vhost], check=True, capture_output=True)
    subprocess.run(
        [rabbitmqctl, "-q", "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"], check=True, capture_output=True
    )
    return vhost


@pytest.fixture
def broker(rabbitmq_vhost):
    """An empty broker for one test: every kit queue purged before it runs."""
    from celery import current_app

    with current_app.connection_for_write() as conn:
        channel = conn.default_channel
        for queue in current_app.conf.task_queues:
            queue(channel).declare()
            queue(channel).purge()
    return current_app


@pytest.fixture(autouse=True)
def environment_restored():
    """What a test's code puts in os.environ, and the umask it sets, end
    with the test: a command run in-process (manage.py flower sets
    FLOWER_BROKER_API for its Flower; manage.py up sets umask 077) would
    otherwise reach every later test's child processes (a rabbitmq-plugins
    run under umask 077 writes an enabled_plugins file the RabbitMQ node
    cannot read)."""
    saved = dict(os.environ)
    umask = os.umask(0o022)
    os.umask(umask)
    yield
    os.umask(umask)
    if os.environ != saved:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture
def worker_env(db_url) -> dict:
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings.test",
        DATABASE_URL=db_url,
        CELERY_BROKER_URL=settings.CELERY_BROKER_URL,
        LOG_LEVEL="INFO",
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.fixture
def db_url(transactional_db) -> str:
    """Workers are separate processes: they only see committed rows, so tests
    that use them run with transactional_db."""
    return test_database_url()


@pytest.fixture
def start_worker(broker, worker_env, tmp_path):
    """start_worker(queues="default", concurrency=1) -> a running worker,
    stopped (and its log attached to a failure) when the test ends."""
    workers: list[WorkerProcess] = []

    def start(*, queues: str = "default", concurrency: int = 1, extra_args=()) -> WorkerProcess:
        worker = WorkerProcess(
            queues=queues, concurrency=concurrency, log_dir=tmp_path, env=worker_env, extra_args=extra_args
        )
        workers.append(worker)
        return worker.start()

    yield start
    for worker in workers:
        worker.stop()
