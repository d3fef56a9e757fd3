"""Celery signal wiring of the reports app: a worker that serves the reports
queue loads the format writers' libraries before it forks its pool."""

from celery.signals import worker_init
from django.conf import settings

from jobs.queues import Queue, broker_queue_names
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
    if sender is None:
        return
    consumed = sender.app.amqp.queues.consume_from
    # Its classic queue, or its priority lanes in quorum mode.
    if not any(name in consumed for name in broker_queue_names([Queue.REPORTS], settings.KIT_QUEUE_TYPE)):
        return
    for format in FORMATS:
        writer_for(format)
