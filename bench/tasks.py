"""The untracked no-op that the bare and common-default variants run (the kit
variant runs jobs.noop)."""

import os
import time

from celery import shared_task
from celery.signals import task_postrun, task_prerun


@shared_task(name="bench.noop")
def noop() -> None:
    """Does nothing."""


# Bare Celery stores nothing, so the worker notes when each task started and
# finished, the same window the other variants read from their database rows.
# One unbuffered append per task (a few microseconds against roughly 700 per
# task); with O_APPEND the two children's lines never interleave mid-line.
# Connected at import, in the worker's main process before it forks, so the
# children's tracers see the receivers.
_STAMP_FILE = os.environ.get("BENCH_STAMP_FILE")
_stamp = {"fd": None, "started": 0.0}

if _STAMP_FILE:

    @task_prerun.connect
    def _note_start(**_) -> None:
        _stamp["started"] = time.time()

    @task_postrun.connect
    def _note_finish(**_) -> None:
        if _stamp["fd"] is None:  # opened in the child, after the fork
            _stamp["fd"] = os.open(_STAMP_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.write(_stamp["fd"], f"{_stamp['started']:.6f} {time.time():.6f}\n".encode())
