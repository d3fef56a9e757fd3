"""The liveness file a worker touches from its event loop (the Kubernetes
probe, ops/worker_liveness.py), on a real worker."""

import os
import signal
import time

import pytest

from ops.worker_liveness import ENV, TOUCH_SECONDS
from tests.helpers import wait_for

pytestmark = pytest.mark.integration


def test_a_running_worker_keeps_touching_its_liveness_file_and_a_frozen_one_does_not(
    broker, start_worker, worker_env, tmp_path, monkeypatch
):
    path = tmp_path / "alive"
    worker_env[ENV] = str(path)
    worker = start_worker(queues="default")

    first = wait_for(lambda: path.exists() and path.stat().st_mtime, timeout=30, what="the liveness file")
    wait_for(lambda: path.stat().st_mtime > first, timeout=TOUCH_SECONDS * 3, what="the file to be touched again")

    os.kill(worker.process.pid, signal.SIGSTOP)  # a hung main process
    try:
        frozen = path.stat().st_mtime
        time.sleep(TOUCH_SECONDS * 1.5)
        assert path.stat().st_mtime == frozen
    finally:
        os.kill(worker.process.pid, signal.SIGCONT)
