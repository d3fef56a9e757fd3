"""The job core's own tasks: two public utility jobs, and the periodic
outbox relay, lost-job reaper, dead-letter marking and pruning that beat
schedules (config/settings/base.py)."""

import logging
import time

from celery import shared_task

from jobs import maintenance, publishing
from jobs.base_task import job_task
from jobs.exceptions import BadInput
from jobs.queues import Queue

logger = logging.getLogger(__name__)


@job_task(name="jobs.noop", queue=Queue.DEFAULT, public=True)
def noop(self) -> None:
    """Does nothing: checks the pipeline end to end, and what benchmarks run."""


# A public task's arguments are bounded: a bulk of 10,000 sleeps of a day
# would hold every default worker for years.
MAX_SLEEP_SECONDS = 30
MAX_SLEEP_STEPS = 100


def _check_sleep(seconds: float = 1.0, steps: int = 10) -> None:
    if not isinstance(seconds, int | float) or isinstance(seconds, bool) or not 0 <= seconds <= MAX_SLEEP_SECONDS:
        raise BadInput(f"seconds must be a number from 0 to {MAX_SLEEP_SECONDS}, not {seconds!r}")
    if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= MAX_SLEEP_STEPS:
        raise BadInput(f"steps must be a whole number from 1 to {MAX_SLEEP_STEPS}, not {steps!r}")


@job_task(name="jobs.sleep", queue=Queue.DEFAULT, public=True, argument_check=_check_sleep)
def sleep(self, seconds: float = 1.0, steps: int = 10) -> dict:
    """Sleeps (at most 30 s), reporting progress in `steps` (at most 100):
    a visible demo of progress."""
    steps = max(1, int(steps))
    for step in range(steps):
        self.progress(step * 100 // steps, f"step {step + 1} of {steps}")
        time.sleep(float(seconds) / steps)
    return {"slept": seconds}


# Not job tasks: they run every few seconds and would fill the job table.
@shared_task(name="jobs.relay_outbox", ignore_result=True, queue=Queue.DEFAULT.value)
def relay_outbox() -> int:
    published = publishing.outbox_relay()
    # Runs every few seconds: a line only when there was something to do
    # (jobs.log_filters keeps Celery's own per-run lines off the console).
    if published:
        logger.info("Outbox relay published %d PENDING job(s).", published)
    return published


@shared_task(name="jobs.reap_lost", ignore_result=True, queue=Queue.DEFAULT.value)
def reap_lost() -> int:
    return maintenance.jobs_reap_lost()


@shared_task(name="jobs.mark_dead_lettered", ignore_result=True, queue=Queue.DEFAULT.value)
def mark_dead_lettered() -> int:
    marked = maintenance.jobs_mark_dead_lettered()
    if marked:
        logger.warning("Marked %d dead-lettered job(s) DEAD.", marked)
    return marked


@shared_task(name="jobs.prune", ignore_result=True, queue=Queue.DEFAULT.value)
def prune() -> int:
    return maintenance.jobs_prune()
