"""kombu: one internal of the semaphore Celery's worker uses to hand
messages to its pool's children.

Written against kombu 5.7. A prefork worker's main process holds the
messages it has taken beyond its free children as waiters of a
LaxBoundedSemaphore (Celery's WorkController.semaphore, public), and starts
them first in, first out: the waiting deque and the two methods bound to it
are private, and there is no public way to order them
(jobs/worker_priority.py).
"""

from kombu.asynchronous.semaphore import LaxBoundedSemaphore

from upstream import UpstreamChanged

WRITTEN_AGAINST = "5.7"


def waiters(semaphore: LaxBoundedSemaphore):
    """What holds `semaphore`'s waiters (a deque unless replaced)."""
    current = getattr(semaphore, "_waiting", None)
    if current is None or not all(hasattr(semaphore, name) for name in ("_add_waiter", "_pop_waiter")):
        raise UpstreamChanged("kombu", WRITTEN_AGAINST, "LaxBoundedSemaphore has no _waiting/_add_waiter/_pop_waiter")
    return current


def replace_waiters(semaphore: LaxBoundedSemaphore, holder) -> None:
    """Hold `semaphore`'s waiters in `holder` (a deque, or one that orders
    its append), those already waiting included."""
    for waiter in waiters(semaphore):
        holder.append(waiter)
    semaphore._waiting = holder
    semaphore._add_waiter = holder.append
    semaphore._pop_waiter = holder.popleft
