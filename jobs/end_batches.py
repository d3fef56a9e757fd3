"""Successful jobs' ends, written by the worker's main process several at a
time, before their messages are acknowledged.

A worker child used to write each job's end with one statement of its own
and wait for it before the next job: on two cores shared with PostgreSQL and
RabbitMQ, that statement and its round trip were most of what tracking cost
(BENCHMARKS.md, "Levers tried": the same jobs, one statement per batch of
ends instead of per job, cost about two thirds of the CPU and ran about 1.3
times as fast).

On the common path (a job that succeeded, its start deferred to its end by
jobs.starts, its result small) the child hands the end to the worker's main
process through a pipe the main process opened before forking its children,
instead of writing it. The main process holds that job's acknowledgement
(jobs.worker_request.JobRequest) and writes the ends it holds in one
statement (jobs.tracking.job_successes_sql and the TaskResult upsert), sent
without waiting for PostgreSQL's answer (jobs.loop_statement: the event loop
goes on handing messages to the children meanwhile), and acknowledges their
messages once the answer says it is committed. It writes:
- at once when no other job is running (an idle worker adds no wait), or when
  it holds as many as its prefetch leaves room for (held messages count
  against it) or END_BATCH_MAX_JOBS;
- otherwise END_BATCH_WAIT_SECONDS after the first one was held;
- and never two at a time: the ends held while a statement is in flight go
  in the next, sent when its answer comes if they are due by then.
What is at stake is what late acknowledgement already guards: a message is
acknowledged only once its job's end is written.
- If the statement cannot be written (the database is away), it is tried
  again with the result backend's backoff and limit, the messages held
  meanwhile, as a worker child retries its own end; past the limit the
  messages go back to the queue, as a worker child that cannot write an end
  hands its job back (jobs.starts.task_ended): the jobs run again once the
  database is back.
- A worker whose main process dies holds no acknowledgement it has not
  written: its messages are redelivered, and their redeliveries start as
  redeliveries do (jobs.tracking.job_mark_started).
- A worker that is stopping, or whose connection to the broker broke, writes
  what it holds at once and waits for the answer, the statement in flight
  first (jobs.worker_consumer.KitConsumer).

Everything else (failures, retries, a redelivery's end, a result too large
for one write to the pipe, a task acknowledged as it starts instead of late,
SQLite, a pool other than prefork, or JOBS_BATCHED_ENDS=false) is written by
the child as before (jobs.backend).
"""

from __future__ import annotations

import logging
import os
import pickle
import select
import struct
import time
from dataclasses import dataclass
from datetime import datetime
from functools import partial

from django.conf import settings
from django.db import DatabaseError, connections, router

from jobs.loop_statement import LoopStatement
from jobs.models import Job
from jobs.queues import END_BATCH_MAX_JOBS, END_BATCH_WAIT_SECONDS

logger = logging.getLogger(__name__)

# Each end is one write to the pipe, atomic up to PIPE_BUF bytes, so the
# children's ends never interleave.
_LENGTH = struct.Struct("I")
_MAX_END_BYTES = select.PIPE_BUF - _LENGTH.size


@dataclass(frozen=True)
class End:
    """A job that succeeded, as its worker child hands it over."""

    job_id: str
    started_at: datetime
    finished_at: datetime
    worker: str
    # The TaskResult row, in jobs.backend's column order.
    task_result: list


class _Batches:
    """The main process's side: the pipe, the ends received, the ones held
    with their acknowledgements."""

    def __init__(self) -> None:
        self.main_pid = os.getpid()
        self.read_end, self.write_end = os.pipe()
        os.set_blocking(self.read_end, False)
        self.unread = b""
        self.received: dict[str, End] = {}
        self.held: list[tuple[object, End]] = []
        # When the first of the held ends was held.
        self.held_since = 0.0
        self.timer = None
        # A write that failed: when it is tried again, and how many times it failed.
        self.retry = None
        self.failures = 0
        self.consumer = None
        # Used in the main process only; it connects when it first sends.
        self.statement = LoopStatement(router.db_for_write(Job))
        # A write() waiting for every held end: it sends what is held after
        # each answer itself.
        self.waiting = False

    # In the worker child.

    def offer(self, end: End) -> bool:
        # Pickled, as Celery's pool passes results between the same processes.
        data = pickle.dumps(end, protocol=pickle.HIGHEST_PROTOCOL)
        if len(data) > _MAX_END_BYTES:
            return False
        os.write(self.write_end, _LENGTH.pack(len(data)) + data)
        return True

    # In the main process.

    def read(self) -> None:
        while True:
            try:
                chunk = os.read(self.read_end, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            self.unread += chunk
        while len(self.unread) >= _LENGTH.size:
            (size,) = _LENGTH.unpack_from(self.unread)
            if len(self.unread) < _LENGTH.size + size:
                break
            end = pickle.loads(self.unread[_LENGTH.size : _LENGTH.size + size])
            self.unread = self.unread[_LENGTH.size + size :]
            self.received[end.job_id] = end

    def hold(self, request) -> bool:
        # Each end is written to the pipe before its job's result, and the
        # pipe is read at each acknowledgement: at most one end per child
        # waits in it, far from filling it.
        self.read()
        end = self.received.pop(request.id, None)
        if end is None:
            return False
        if not self.held:
            self.held_since = time.monotonic()
        self.held.append((request, end))
        self._write_when_due()
        return True

    def _write_when_due(self) -> None:
        """Write the held ends now if the worker stops, if they are due, or
        if the first has waited END_BATCH_WAIT_SECONDS; else when it has."""
        if _worker_stopping():
            self.write(wait=True)
            return
        waited = time.monotonic() - self.held_since
        if self.hub is None or self._due() or waited >= END_BATCH_WAIT_SECONDS:
            self.write()
        elif self.timer is None:
            self.timer = self.hub.call_later(END_BATCH_WAIT_SECONDS - waited, self.write)

    def _due(self) -> bool:
        """Whether the held ends are to be written now rather than with
        more: no other job is running, or they fill what the prefetch leaves."""
        from celery.worker import state

        return not state.reserved_requests or len(self.held) >= self._room()

    def forget(self, job_id: str) -> None:
        """A job whose child died after handing its end over: its message
        goes back to the queue, and its redelivery starts anew."""
        self.read()
        self.received.pop(job_id, None)

    def write(self, *, wait: bool = False) -> None:
        """Send the held ends in one statement; their messages are
        acknowledged once it is committed (_written). With `wait` (the worker
        stops, or its broker connection broke; or there is no event loop to
        read the answer), return only once every held end is written or
        handed to a retry, the statement in flight first."""
        wait = wait or self.hub is None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        waiting_before, self.waiting = self.waiting, wait
        try:
            while self.retry is None:
                if self.statement.busy:
                    if not wait:
                        return  # sent when the one in flight is written (_written)
                    self.statement.wait()
                    continue
                self.read()
                held, self.held = self.held, []
                if not held:
                    return
                self._send(held)
                if not wait:
                    return
        finally:
            self.waiting = waiting_before

    def _send(self, held: list) -> None:
        from jobs.backend import TrackedDatabaseBackend

        try:
            sql, params = TrackedDatabaseBackend.successes_statement(
                connections[self.statement.alias], [end for _, end in held]
            )
            self.statement.send(sql, params, partial(self._written, held), hub=self.hub)
        except DatabaseError as exc:
            self._retry_later(held, exc)

    def _written(self, held: list, error: DatabaseError | None) -> None:
        if error is not None:
            self._retry_later(held, error)
        else:
            self.failures = 0
            for request, _ in held:
                request.acknowledge_now()
        # The ends held while this one was in flight. A waiting write()
        # sends them itself.
        if not self.waiting and self.held and self.retry is None and not self.statement.busy:
            self._write_when_due()

    def _retry_later(self, held: list, exc: DatabaseError) -> None:
        """The database is away: try again with the result backend's own
        backoff and limit (a child's end is retried the same way), holding
        the messages meanwhile (the prefetch then stops new deliveries). Past
        the limit, or while the worker stops, the messages go back to the
        queue and their jobs run again once the database is back."""
        from celery.utils.time import get_exponential_backoff_interval

        backend = self.consumer.app.backend
        self.failures += 1
        if self.failures > backend.max_retries or _worker_stopping():
            logger.error(
                "Could not write the end of %d job(s) to the database (%s): their messages go back to the queue.",
                len(held),
                exc,
            )
            self.failures = 0
            for request, _ in held:
                request.reject(requeue=True)
            return
        self.held = held + self.held
        delay = get_exponential_backoff_interval(
            backend.base_sleep_between_retries_ms, self.failures, backend.max_sleep_between_retries_ms, True
        )
        logger.warning("Could not write the end of %d job(s) yet (%s); trying again.", len(held), exc)
        if self.hub is None:
            time.sleep(delay / 1000)
            self._retry()
        else:
            self.retry = self.hub.call_later(delay / 1000, self._retry)

    def _retry(self) -> None:
        self.retry = None
        self.write()

    def _room(self) -> int:
        """How many ends may be held before they are written: held messages
        count against the prefetch, and each child needs one to go on."""
        consumer = self.consumer
        if consumer is None or consumer.qos is None or not consumer.qos.value:
            return END_BATCH_MAX_JOBS
        return max(1, min(END_BATCH_MAX_JOBS, consumer.qos.value - consumer.pool.num_processes))

    @property
    def hub(self):
        """The worker's event loop, which runs the timer: the consumer's own
        (kombu's current loop is cleared when a lost connection resets it)."""
        return getattr(self.consumer, "hub", None)


def _worker_stopping() -> bool:
    """Whether the worker has been told to stop (warm or cold)."""
    from celery.worker import state

    return state.should_stop is not None or state.should_terminate is not None


_batches: _Batches | None = None


def open_for(worker) -> None:
    """In the worker's main process, before it forks its children (Celery's
    worker_init): ends are handed over where they can be."""
    global _batches
    pool = worker.pool_cls if isinstance(worker.pool_cls, str) else worker.pool_cls.__module__
    if (
        settings.JOBS_BATCHED_ENDS
        and settings.JOBS_START_RECORD_DELAY_MS > 0
        and "prefork" in pool
        and worker.use_eventloop
        and connections[router.db_for_write(Job)].vendor == "postgresql"
    ):
        _batches = _Batches()


def follow(consumer) -> None:
    """The consumer whose prefetch bounds how many ends are held."""
    if _batches is not None:
        _batches.consumer = consumer


def offer(end: End) -> bool:
    """In a worker child: hand the end to the main process; False if it must
    be written here."""
    if _batches is None or os.getpid() == _batches.main_pid:
        return False
    return _batches.offer(end)


def hold(request) -> bool:
    """In the main process, instead of acknowledging `request`'s message: if
    its child handed the job's end over, hold the acknowledgement until the
    end is written (request.acknowledge_now), and say True."""
    if _batches is None or os.getpid() != _batches.main_pid:
        return False
    return _batches.hold(request)


def write_held() -> None:
    """Write the ends held now and acknowledge their messages: before the
    consumer's connection closes (the worker stops, or the connection was
    lost: their jobs succeeded, and a redelivered copy finds them so)."""
    if _batches is not None and os.getpid() == _batches.main_pid:
        _batches.write(wait=True)


def forget(job_id: str) -> None:
    if _batches is not None and os.getpid() == _batches.main_pid:
        _batches.forget(job_id)
