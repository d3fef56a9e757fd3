"""Fixtures for the operations tests: job rows with chosen timestamps,
workers that send events, Flower as an operator runs it, and the browser."""

import os
import socket
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone

from jobs.models import Job, JobStatus
from ops import broker
from tests.browser.conftest import page  # noqa: F401  (the same Chromium set-up as the admin's browser test)
from tests.helpers import REPO, free_port, wait_for

FLOWER_LOGIN = ("operator", "flower-test-secret")


@pytest.fixture(autouse=True)
def fresh_ops_cache():
    """Broker answers are cached per process; each test asks afresh."""
    broker.cache.clear()
    yield
    broker.cache.clear()


@pytest.fixture
def worker_env(worker_env) -> dict:
    # The test settings turn task events off for speed; Flower needs them.
    return {**worker_env, "CELERY_WORKER_SEND_TASK_EVENTS": "true"}


def make_job(
    *,
    queue="default",
    task="testapp.block",
    status=JobStatus.SUCCESS,
    created=None,
    queued=None,
    started=None,
    finished=None,
    **fields,
) -> Job:
    """A Job row as a worker would have left it, timestamps given as
    seconds after `created` (default: now)."""
    created_at = created or timezone.now()

    def at(offset):
        return None if offset is None else created_at + timedelta(seconds=offset)

    job = Job.objects.create(task_name=task, queue=queue, status=status, **fields)
    # created_at is auto_now_add: set it with an UPDATE, as a past job's.
    Job.objects.filter(pk=job.pk).update(
        created_at=created_at, queued_at=at(queued), started_at=at(started), finished_at=at(finished)
    )
    job.refresh_from_db()
    return job


class FlowerProcess:
    """`manage.py flower` on a free loopback port, as `make run` starts it."""

    def __init__(self, env: dict, log_path: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = env
        self.log_path = log_path

    def start(self) -> "FlowerProcess":
        self.log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "flower", "--port", str(self.port)],
            cwd=REPO,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for(self._answers, timeout=60, what=f"Flower on port {self.port} (log: {self.log_path})")
        return self

    def _answers(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"Flower exited with {self.process.returncode}:\n{self.log_path.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
        except OSError:
            return False
        return True

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


@pytest.fixture(scope="session")
def flower(rabbitmq_vhost, tmp_path_factory):
    """One Flower for the session: it keeps no database, only the broker's
    events, so tests share it as operators share theirs."""
    var_dir = tmp_path_factory.mktemp("flower-var")
    env = {name: value for name, value in os.environ.items() if name != "FLOWER_BROKER_API"}
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings.test",
        CELERY_BROKER_URL=settings.CELERY_BROKER_URL,
        FLOWER_BASIC_AUTH=":".join(FLOWER_LOGIN),
        KIT_VAR_DIR=str(var_dir),
        PYTHONUNBUFFERED="1",
    )
    process = FlowerProcess(env, var_dir / "flower.log").start()
    yield process
    process.stop()
