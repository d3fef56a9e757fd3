"""Logging filters that keep the console about what a person needs to see
(LOGGING in config/settings/base.py attaches them to the console handler).

- Housekeeping: beat's "Sending due task" and the worker's "received" and
  "succeeded" lines for the kit's own periodic tasks (the outbox relay every
  10 s, the reaper, pruning) said nothing while the stack was idle, three
  lines every ten seconds. The tasks log themselves when they did something
  (jobs/tasks.py); their failures still show.
- Expected failures: a job failing with BadInput is input a person must fix,
  not a bug: Celery logs it in one line without a traceback (JobTask.throws)
  at INFO; this raises it to WARNING, as a failed job should be noticed.
- Start-up chatter: Flower's list of every registered task (twenty lines),
  the broker URL it repeats, and its events consumer's "Connected to" (a
  lost connection is still logged, as a warning).
"""

import logging

from django.conf import settings

# Loggers whose INFO records name a task per run.
_PER_RUN_LOGGERS = ("celery.beat", "celery.worker.strategy", "celery.app.trace")


def housekeeping_task_names() -> tuple[str, ...]:
    return tuple(entry["task"] for entry in getattr(settings, "CELERY_BEAT_SCHEDULE", {}).values())


class QuietHousekeeping(logging.Filter):
    def __init__(self, name: str = ""):
        super().__init__(name)
        self.task_names: tuple[str, ...] | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO or not record.name.startswith(_PER_RUN_LOGGERS):
            return True
        if self.task_names is None:  # settings are complete by the first record
            self.task_names = housekeeping_task_names()
        message = record.getMessage()
        return not any(name in message for name in self.task_names)


class ExpectedFailureAsWarning(logging.Filter):
    """Celery's one line for an exception listed in a task's `throws`."""

    def filter(self, record: logging.LogRecord) -> bool:
        data = getattr(record, "data", None)
        if (
            record.name == "celery.app.trace"
            and isinstance(data, dict)
            and data.get("description") == "raised expected"
        ):
            record.levelno, record.levelname = logging.WARNING, logging.getLevelName(logging.WARNING)
        return True


class QuietFlowerStart(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO:
            return True
        if record.name == "flower.command":
            return not str(record.msg).startswith(("Registered tasks", "Broker:"))
        return not (record.name == "kombu.mixins" and str(record.msg).startswith("Connected to"))
