"""Small tools shared by the tests: waiting for a condition, and running
real Celery worker processes against the test database and broker."""

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from django.db import connection

REPO = Path(__file__).resolve().parent.parent


def wait_for(condition: Callable[[], object], *, timeout: float = 30, interval: float = 0.1, what: str = "condition"):
    """Poll until `condition()` is truthy; return its value or fail loudly."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"Timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    """A loopback port nothing listens on right now, for a server of a test's own."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def jobs_by_status(jobs) -> dict:
    """{status: how many} of the given jobs, as the database has them now."""
    from django.db.models import Count

    from jobs.models import Job

    rows = Job.objects.filter(pk__in=[job.pk for job in jobs]).values_list("status").annotate(n=Count("id"))
    return dict(rows.values_list("status", "n"))


def drop_publishing_pools() -> None:
    """Celery builds its connection and producer pools lazily from the
    broker URL: after a test changes the URL, the next publish uses the new
    one."""
    from celery import current_app

    current_app._pool = None
    current_app.amqp._producer_pool = None


def test_database_url() -> str:
    """The URL of the database pytest-django created, for child processes."""
    s = connection.settings_dict
    if s["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{s['NAME']}"
    auth = s["USER"] + (f":{s['PASSWORD']}" if s["PASSWORD"] else "")
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


test_database_url.__test__ = False  # a helper: pytest must not collect it when imported


class WorkerProcess:
    """A real `celery worker` process (prefork pool by default)."""

    def __init__(self, *, queues: str, concurrency: int, log_dir: Path, env: dict, extra_args=()):
        self.name = f"test-{uuid.uuid4().hex[:8]}@localhost"
        self.log_path = log_dir / f"{self.name.split('@')[0]}.log"
        self.queues = queues
        self.concurrency = concurrency
        self.env = env
        self.extra_args = list(extra_args)
        self.process: subprocess.Popen | None = None

    def start(self, *, timeout: float = 60) -> "WorkerProcess":
        command = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "-Q",
            self.queues,
            "-c",
            str(self.concurrency),
            "-n",
            self.name,
            "--without-gossip",
            "--without-mingle",
            "-l",
            "info",
            *self.extra_args,
        ]
        self.log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            command, cwd=REPO, env=self.env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )
        wait_for(self._ready, timeout=timeout, what=f"worker {self.name} to be ready (log: {self.log_path})")
        return self

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"worker exited with {self.process.returncode}:\n{self.read_log()}")
        return b" ready." in self.log_path.read_bytes()

    def read_log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def child_pids(self) -> list[int]:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        return [int(pid) for pid in children]

    def kill_main(self) -> None:
        """SIGKILL the main process and its pool, as a crashed host would."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self, timeout: float = 20) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self.log.close()
