"""A worker starts the messages it holds highest priority first.

RabbitMQ delivers a priority queue's messages in priority order, but only
the ones it still has. The messages a worker has taken and not yet started
wait in its main process for a free child (Celery's worker semaphore), and
Celery starts them in the order they arrived: a high job delivered while the
worker held low ones waited for all of them. Measured with eight held per
child, a high job's wait from its publish to its start behind a low backlog
went from 2.7 - 3.2 ms at four per child to 8.8 - 9.3 ms (BENCHMARKS.md,
"Levers tried"). Here the waiting messages are kept highest priority first,
first in first out within a priority, so a high job waits only for a child
to come free, however many messages the worker holds
(jobs.worker_prefetch).
"""

from collections import deque

from upstream.kombu import replace_waiters, waiters


def _priority(waiter) -> int:
    # A waiter is (callback, args, kwargs); the worker's is
    # (WorkController._process_task, (request,), {}).
    _, args, _ = waiter
    request = args[0] if args else None
    return (getattr(request, "delivery_info", None) or {}).get("priority") or 0


class PriorityWaiters(deque):
    """Waiters highest priority first; appendleft and popleft as a deque."""

    def append(self, waiter) -> None:
        priority = _priority(waiter)
        if not self or _priority(self[-1]) >= priority:
            super().append(waiter)
            return
        # Behind the last waiter of at least this priority: at most as many
        # steps as the worker holds messages.
        index = len(self) - 1
        while index > 0 and _priority(self[index - 1]) < priority:
            index -= 1
        self.insert(index, waiter)


def follow(controller) -> None:
    """In the worker's main process, once its pool's semaphore exists (a
    pool that hands messages to children one at a time; None otherwise)."""
    semaphore = getattr(controller, "semaphore", None)
    if semaphore is not None and not isinstance(waiters(semaphore), PriorityWaiters):
        replace_waiters(semaphore, PriorityWaiters())
