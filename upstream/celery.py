"""Celery: the Django fix-up's database connection handling, and the
worker consumer's delayed-delivery step.

Written against celery 5.7.0. Celery's Django fix-up (celery/fixups/django.py,
DjangoWorkerFixup) closes the worker's database connections before and after
every task unless the undocumented CELERY_DB_REUSE_MAX setting is set (Celery
stopped honouring CONN_MAX_AGE there, celery/celery#9824). The kit sets it
high (config/settings/base.py) and applies Django's own rules instead
(jobs/signals.py). The check below fails loudly if the fix-up stops reading it.
"""

from upstream import UpstreamChanged

WRITTEN_AGAINST = "5.7.0"
DB_REUSE_SETTING = "CELERY_DB_REUSE_MAX"


def check_db_reuse_is_honoured(app) -> None:
    """Raise UpstreamChanged if Celery's Django fix-up ignores DB_REUSE_SETTING."""
    from celery.fixups.django import DjangoWorkerFixup

    fixup = DjangoWorkerFixup(app)
    if getattr(fixup, "db_reuse_max", None) != app.conf.get(DB_REUSE_SETTING):
        raise UpstreamChanged("celery", WRITTEN_AGAINST, f"the Django fix-up no longer reads {DB_REUSE_SETTING}")


# The worker consumer's step that binds queues for native delayed delivery
# (countdowns on quorum queues); jobs/worker_consumer.py replaces it with a
# subclass that declares every kit queue first, overriding its private
# _bind_queues (Celery has no hook before the binding).
DELAYED_DELIVERY_STEP = "celery.worker.consumer.delayed_delivery:DelayedDelivery"


def steps_with(steps, replaced: str, replacement: str) -> list[str]:
    """`steps` with `replaced` swapped for `replacement`; UpstreamChanged if
    Celery no longer has that step (the swap would silently do nothing)."""
    steps = list(steps)
    if replaced not in steps:
        raise UpstreamChanged("celery", WRITTEN_AGAINST, f"the worker consumer has no step {replaced}")
    return [replacement if step == replaced else step for step in steps]


# The consumer step that starts taking task messages; a step placed before it
# runs, at every (re)start of the consumer, before any message is handled.
TASKS_STEP = "celery.worker.consumer.tasks:Tasks"


def steps_before(steps, anchor: str, added: str) -> list[str]:
    """`steps` with `added` placed just before `anchor`; UpstreamChanged if
    Celery no longer has that step."""
    steps = list(steps)
    if anchor not in steps:
        raise UpstreamChanged("celery", WRITTEN_AGAINST, f"the worker consumer has no step {anchor}")
    return [*steps[: steps.index(anchor)], added, *steps[steps.index(anchor) :]]


def revoked_elsewhere(task_ids) -> None:
    """Tell this worker that these tasks were revoked while it was not
    listening: Celery's own way for ids received on mingle or read from the
    state db (celery.worker.state.merge_revoked). Its Request then
    acknowledges such a task without running it, and marks it REVOKED."""
    from celery.worker import state

    if not callable(getattr(state, "merge_revoked", None)):
        raise UpstreamChanged("celery", WRITTEN_AGAINST, "celery.worker.state.merge_revoked is gone")
    state.merge_revoked(task_ids)


# The flags Celery's worker Request sets when the worker itself stopped the
# task (a revoke, or a cancel on connection loss); it has no public form.
_REQUEST_STOP_FLAGS = ("_already_revoked", "_already_cancelled")


def stopped_by_the_worker(request) -> bool:
    """Whether the worker revoked or cancelled this worker Request itself
    (so its child's death is no crash of the task's own)."""
    return any(getattr(request, flag) for flag in _REQUEST_STOP_FLAGS)


def check_request_stop_flags() -> None:
    """Raise UpstreamChanged if the worker Request lost the flags
    stopped_by_the_worker reads."""
    from celery.worker.request import Request

    for flag in _REQUEST_STOP_FLAGS:
        if not hasattr(Request, flag):
            raise UpstreamChanged("celery", WRITTEN_AGAINST, f"the worker Request has no {flag}")


def check_delayed_delivery_binds_queues() -> None:
    """Raise UpstreamChanged if DelayedDelivery lost the method the kit's
    subclass extends."""
    from celery.worker.consumer.delayed_delivery import DelayedDelivery

    if not callable(getattr(DelayedDelivery, "_bind_queues", None)):
        raise UpstreamChanged("celery", WRITTEN_AGAINST, "DelayedDelivery._bind_queues is gone")
