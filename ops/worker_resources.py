"""A remote-control command the workers answer: the CPU time and resident
memory of the worker's main process and of each of its pool children.

`celery inspect stats` reports getrusage(RUSAGE_SELF) of the main process
only: the prefork children, where the tasks run and where memory grows,
are not in it (and RUSAGE_CHILDREN counts only children that have exited).
Each worker reads its own process tree with psutil, so the answer needs
nothing on the worker's host but the worker, and the metrics endpoint
(ops/metrics.py) gets every worker's figures from one broadcast.

Registered when Django loads the ops app (OpsConfig.ready), in every
process; only workers answer broadcasts.
"""

import os

import psutil
from celery.worker.control import inspect_command

COMMAND = "kit_resources"


def process_resources(process: psutil.Process) -> dict:
    """{"pid", "cpu_seconds", "rss_bytes"} of one live process."""
    with process.oneshot():
        times = process.cpu_times()
        return {
            "pid": process.pid,
            "cpu_seconds": times.user + times.system,
            "rss_bytes": process.memory_info().rss,
        }


def worker_resources(pid: int | None = None) -> dict:
    """The main process and its direct children (the pool). A child that
    exits while it is being read (recycled after max-tasks or max-memory) is
    left out: the next answer has its successor."""
    main = psutil.Process(pid or os.getpid())
    children = []
    for child in main.children(recursive=False):
        try:
            children.append(process_resources(child))
        except psutil.NoSuchProcess:
            continue
    return {"main": process_resources(main), "children": children}


@inspect_command(name=COMMAND)
def kit_resources(state) -> dict:
    return worker_resources()
