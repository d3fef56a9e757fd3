"""The worker's consumer, with two changes.

Jobs cancelled while this worker was not listening: each time the consumer
starts (the worker starts, or reconnects to the broker), before it takes a
message, it reads from the database the jobs cancelled before they started
and tells Celery they are revoked (CancelledJobs). A revoke broadcast only
reaches the workers connected when it is sent, and a worker defers a job's
start to its end (jobs.starts), so without this such a job would run.

Quorum mode: Celery's native
delayed delivery (which carries countdowns and retry backoffs on quorum
queues, jobs.queues.QUORUM_EXCHANGE) binds every queue of the app, but the
worker declared only the ones it consumes, so on a fresh cluster the binding
of every other lane fails with 404 NOT_FOUND and a delayed message for those
lanes would have nowhere to go. Here every kit queue, and the dead-letter
queue the lanes dead-letter to (with the kit's own copy of it), is declared
first (declares are idempotent, so each worker start and each reconnect to another node repeats them safely).

Prefetch: the worker holds more messages per child while its jobs are
short (jobs.worker_prefetch), unless a fixed prefetch multiplier was chosen,
and starts the ones it holds highest priority first (jobs.worker_priority).

Ends held for a batch (jobs.end_batches) are written before the connection
closes or after it broke.

Shutdown: Celery's handlers for SIGTERM, SIGINT and SIGQUIT only set a flag
that the event loop reads once its poll returns, and an idle loop polls
until its next timer: an idle worker took 4 - 6 s to begin a warm shutdown,
a wait every stop of every worker paid (a deploy, Ctrl-C, each test's
teardown). The loop also watches a pipe, and the worker_shutting_down
signal, which those handlers send, writes a byte to it (_ShutdownWakeup).

Selected by CELERY_WORKER_CONSUMER (config/settings/base.py).
"""

import logging
import os

from celery import bootsteps, signals
from celery.worker.consumer import Consumer
from celery.worker.consumer.delayed_delivery import DelayedDelivery
from django.conf import settings
from django.db import DatabaseError, connections

from jobs import end_batches, worker_prefetch, worker_priority
from jobs.queues import dead_letter_notice_queue, dead_letter_queue
from jobs.starts import cancelled_before_start
from upstream.celery import (
    DELAYED_DELIVERY_STEP,
    TASKS_STEP,
    check_delayed_delivery_binds_queues,
    revoked_elsewhere,
    steps_before,
    steps_with,
)

logger = logging.getLogger(__name__)

check_delayed_delivery_binds_queues()


class KitQueuesDelayedDelivery(DelayedDelivery):
    def _bind_queues(self, app, connection) -> None:
        channel = connection.channel()
        try:
            for queue in app.amqp.queues.values():
                queue(channel).declare()
            dead_letter_queue(settings.KIT_QUEUE_TYPE)(channel).declare()
            dead_letter_notice_queue(settings.KIT_QUEUE_TYPE)(channel).declare()
        finally:
            channel.close()
        super()._bind_queues(app, connection)


class CancelledJobs(bootsteps.StartStopStep):
    """Jobs cancelled before they started, from the database, into the
    worker's revoked set before it takes a message."""

    def start(self, consumer) -> None:
        try:
            job_ids = cancelled_before_start()
        except DatabaseError as exc:
            logger.warning("Could not read the cancelled jobs from the database: %s", exc)
            return
        finally:
            # The main process runs no task: it keeps no connection open for this
            # (only for the ends it writes, jobs.end_batches, which reopens it).
            connections.close_all()
        revoked_elsewhere(job_ids)
        if job_ids:
            logger.info("%d job(s) cancelled before they started will not run here.", len(job_ids))


class _ShutdownWakeup:
    """A pipe the worker's event loop watches; a byte written to it makes the
    loop's poll return, and the loop then sees Celery's shutdown flag."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.read_end, self.write_end = os.pipe()
        os.set_blocking(self.read_end, False)
        os.set_blocking(self.write_end, False)

    def follow(self, hub) -> None:
        """Watched by `hub` (again after each reconnect: a reset loop forgets
        its readers)."""
        hub.add_reader(self.read_end, self._drain)

    def wake(self) -> None:
        # From a signal handler: a write, nothing that could be midway
        # through in the interrupted code. A full pipe is awake already.
        if os.getpid() == self.pid:
            try:
                os.write(self.write_end, b"\0")
            except BlockingIOError:
                pass

    def _drain(self) -> None:
        try:
            os.read(self.read_end, 4096)
        except BlockingIOError:
            pass


_shutdown_wakeup: _ShutdownWakeup | None = None


@signals.worker_shutting_down.connect
def _wake_the_loop(**kwargs) -> None:
    if _shutdown_wakeup is not None:
        _shutdown_wakeup.wake()


class KitConsumer(Consumer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # A multiplier set in the environment or on the command line (not
        # the settings' default) is the deployment's choice: kept as is.
        given = self.prefetch_multiplier != self.app.conf.worker_prefetch_multiplier
        if not (settings.JOBS_PREFETCH_MULTIPLIER_SET or given):
            worker_prefetch.follow(self)
        worker_priority.follow(self.controller)
        end_batches.follow(self)
        global _shutdown_wakeup
        _shutdown_wakeup = _ShutdownWakeup()

    def loop_args(self):
        # Each time the event loop starts: the worker starts, or reconnects.
        if self.hub is not None:
            _shutdown_wakeup.follow(self.hub)
        return super().loop_args()

    def shutdown(self):
        # Ends held for a batch are written, and their messages
        # acknowledged, while the connection is still open.
        end_batches.write_held()
        super().shutdown()

    def on_close(self):
        # The connection broke: the held acknowledgements cannot reach the
        # broker, but the jobs succeeded; a redelivered copy finds them so.
        end_batches.write_held()
        super().on_close()

    class Blueprint(Consumer.Blueprint):
        default_steps = steps_before(
            steps_with(
                Consumer.Blueprint.default_steps,
                DELAYED_DELIVERY_STEP,
                "jobs.worker_consumer:KitQueuesDelayedDelivery",
            ),
            TASKS_STEP,
            "jobs.worker_consumer:CancelledJobs",
        )
