"""Celery signal wiring of the reports app: a worker that serves the reports
queue loads the format writers' libraries before it forks its pool."""

from celery.signals import worker_init

from jobs.queues import Queue
from reports.registry import FORMATS
from reports.writers import writer_for


@worker_init.connect(dispatch_uid="reports.preload_writers")
def preload_writers(sender=None, **kwargs) -> None:
    """Import every writer (openpyxl, reportlab) in the worker's main
    process, if it consumes the reports queue.

    writer_for imports them on first use, so that web processes never load
    them. In a worker that meant every pool child paid the import (0.1 to
    0.2 s for openpyxl, as much again for reportlab) inside its first report
    job, again after each max-tasks-per-child replacement, each child with a
    copy of its own; imported here, before the fork, the children share the
    parent's. A worker that does not consume the reports queue (`-Q` without
    it) is left as light as it was."""
    if sender is None or Queue.REPORTS.value not in sender.app.amqp.queues.consume_from:
        return
    for format in FORMATS:
        writer_for(format)
