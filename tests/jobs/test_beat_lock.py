"""One beat per deployment: two `manage.py beat` processes with different
state directories (two containers, two pods in a rollout) on the same
PostgreSQL; the second sends nothing until the first is gone."""

import os
import signal
import subprocess
import sys
import threading

import pytest
from django.db import connection

from jobs.beat_lock import BeatLock
from tests.helpers import REPO, wait_for

pytestmark = pytest.mark.integration

SENDS = "Sending due task"


class BeatProcess:
    def __init__(self, env: dict, var_dir, log_path):
        self.log_path = log_path
        self.log = open(log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "beat"],
            cwd=REPO,
            env={**env, "KIT_VAR_DIR": str(var_dir)},
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def read_log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self.log.close()


@pytest.fixture
def start_beat(worker_env, tmp_path):
    beats = []
    env = {**worker_env, "JOBS_RELAY_INTERVAL_SECONDS": "1", "JOBS_BEAT_LOCK_POLL_SECONDS": "1"}

    def start(name: str) -> BeatProcess:
        beat = BeatProcess(env, tmp_path / name, tmp_path / f"{name}.log")
        beats.append(beat)
        return beat

    yield start
    for beat in beats:
        beat.stop()


def test_a_second_beat_sends_nothing_while_the_first_runs_and_takes_over_when_it_dies(start_beat, db_url):
    first = start_beat("first")
    wait_for(lambda: SENDS in first.read_log(), timeout=60, what=f"the first beat to send ({first.log_path})")

    second = start_beat("second")
    wait_for(
        lambda: "standing by" in second.read_log(), timeout=60, what=f"the second beat to wait ({second.log_path})"
    )
    sent_by_first = first.read_log().count(SENDS)
    wait_for(lambda: first.read_log().count(SENDS) >= sent_by_first + 3, timeout=30, what="the first to keep sending")
    assert SENDS not in second.read_log()
    assert second.process.poll() is None

    first.stop()  # SIGKILL: no goodbye; PostgreSQL ends its session and frees the lock

    wait_for(lambda: SENDS in second.read_log(), timeout=60, what=f"the second beat to take over ({second.log_path})")
    assert "holds the schedule lock" in second.read_log()


def test_a_beat_whose_lock_session_is_killed_is_told_to_stop(transactional_db):
    lock = BeatLock(poll_seconds=0.2)
    lock.acquire()
    lost = threading.Event()
    try:
        assert lock.holds()
        with lock.connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            backend = cursor.fetchone()[0]
        lock.watch(on_lost=lost.set)
        assert not lost.wait(timeout=1.5), "the watch must not stop a beat that holds its lock"
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [backend])

        assert lost.wait(timeout=10), "the watch did not notice the lost lock"
    finally:
        lock.release()
