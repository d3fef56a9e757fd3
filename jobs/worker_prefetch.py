"""How many messages a worker holds: more while its jobs are short.

With late acknowledgement and one message per child, a child that finishes
a job waits for its acknowledgement to reach RabbitMQ and the next delivery
to come back before it can start again; for jobs of a few milliseconds that
wait is a large share of the time. Holding a few messages per child removes
it. A message held by a worker is out of RabbitMQ's priority order, but the
worker starts the ones it holds highest priority first (jobs.worker_priority),
so a high job that arrives waits for a child, not for them. What a worker
holds, another worker cannot take: so a worker holds more only while the jobs
it runs are short (jobs.queues.SHORT_JOB_SECONDS), which keeps that under a
second of work, and goes back to one message per child as soon as a job runs
longer (a report, an image, a rate-limited mail batch). BENCHMARKS.md
measures what it gives.

The worker's main process learns each job's run time when it acknowledges
the message (jobs.worker_request.JobRequest), and changes the channel's
prefetch count the way Celery itself does for countdown messages
(QoS.increment_eventually, applied by the event loop). A deployment that
sets CELERY_WORKER_PREFETCH_MULTIPLIER, or a worker started with
--prefetch-multiplier, keeps that value throughout.
"""

from __future__ import annotations

from jobs.queues import SHORT_JOB_PREFETCH_MULTIPLIER, SHORT_JOB_SECONDS, SHORT_JOBS_BEFORE_HOLDING


class ShortJobPrefetch:
    """The prefetch policy of one worker consumer (its main process)."""

    def __init__(self, consumer) -> None:
        self.consumer = consumer
        self.short_in_a_row = 0
        # The QoS the extra messages were added to, and how many: a consumer
        # that reconnects starts again from its own count, on a new QoS.
        self.holding_qos = None
        self.added = 0

    def job_ended(self, seconds: float) -> None:
        qos = self.consumer.qos
        if qos is None:
            return
        if self.holding_qos is not qos:
            self.holding_qos = None
        if seconds > SHORT_JOB_SECONDS:
            self.short_in_a_row = 0
            if self.holding_qos is not None:
                qos.decrement_eventually(self.added)
                self.holding_qos = None
            return
        self.short_in_a_row += 1
        if self.holding_qos is None and self.short_in_a_row >= SHORT_JOBS_BEFORE_HOLDING:
            self.added = self.consumer.pool.num_processes * (SHORT_JOB_PREFETCH_MULTIPLIER - 1)
            qos.increment_eventually(self.added)
            self.holding_qos = qos


# The main process's policy, set by the kit's consumer (jobs.worker_consumer);
# None where none applies (a fixed multiplier, or not a worker).
_policy: ShortJobPrefetch | None = None


def follow(consumer) -> None:
    global _policy
    _policy = ShortJobPrefetch(consumer)


def job_ended(seconds: float) -> None:
    if _policy is not None:
        _policy.job_ended(seconds)
