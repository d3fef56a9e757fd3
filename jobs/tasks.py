"""The job core's own tasks: two public utility jobs, and the periodic
outbox relay, lost-job reaper and pruning that beat schedules
(config/settings/base.py)."""

import logging
import time

from celery import shared_task

from jobs import services
from jobs.base_task import job_task
from jobs.exceptions import BadInput
from jobs.queues import Queue

logger = logging.getLogger(__name__)


@job_task(name="jobs.noop", queue=Queue.DEFAULT, public=True)
def noop(self) -> None:
    """Does nothing: checks the pipeline end to end, and what benchmarks run."""


@job_task(name="jobs.sleep", queue=Queue.DEFAULT, public=True)
def sleep(self, seconds: float = 1.0, steps: int = 10) -> dict:
    """Sleeps, reporting progress in `steps`: a visible demo of progress,
    and of bad input failing its job at once (a negative time)."""
    if not isinstance(seconds, int | float) or not 0 <= seconds <= 3600:
        raise BadInput(f"seconds must be a number from 0 to 3600, not {seconds!r}")
    steps = max(1, int(steps))
    for step in range(steps):
        self.progress(step * 100 // steps, f"step {step + 1} of {steps}")
        time.sleep(float(seconds) / steps)
    return {"slept": seconds}


# Not job tasks: they run every few seconds and would fill the job table.
@shared_task(name="jobs.relay_outbox", ignore_result=True, queue=Queue.DEFAULT.value)
def relay_outbox() -> int:
    published = services.outbox_relay()
    # Runs every few seconds: a line only when there was something to do
    # (jobs.log_filters keeps Celery's own per-run lines off the console).
    if published:
        logger.info("Outbox relay published %d PENDING job(s).", published)
    return published


@shared_task(name="jobs.reap_lost", ignore_result=True, queue=Queue.DEFAULT.value)
def reap_lost() -> int:
    return services.jobs_reap_lost()


@shared_task(name="jobs.prune", ignore_result=True, queue=Queue.DEFAULT.value)
def prune() -> int:
    return services.jobs_prune()
