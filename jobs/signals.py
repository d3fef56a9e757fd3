"""Celery signal wiring of the job core: database connections in workers.

Celery's Django fixup closes every connection before and after each task
unless CELERY_DB_REUSE_MAX is set (upstream/celery.py) (Celery reverted honouring CONN_MAX_AGE,
celery/celery#9824); a new PostgreSQL connection per task is what makes the
common setup slow. The settings set CELERY_DB_REUSE_MAX high, and this
handler applies Django's own rules instead (CONN_MAX_AGE, dropping broken
connections), minus the health check's probe before every task.
"""

from celery import states
from celery.signals import task_internal_error, task_postrun, worker_init
from django.db import connections

from jobs import end_batches, starts
from upstream.django_db import skip_next_health_check


@task_postrun.connect(dispatch_uid="jobs.release_database_connections")
def release_database_connections(task_id=None, state=None, **kwargs) -> None:
    if task_id:
        # Before the connections are looked at: it may use one.
        starts.task_ended(task_id)
    if state == states.SUCCESS:
        for connection in connections.all(initialized_only=True):
            # Closes what is past CONN_MAX_AGE or broke during the task.
            connection.close_if_unusable_or_obsolete()
            # Skips CONN_HEALTH_CHECKS' probe (a round trip per task): the
            # next task's first statement is job_mark_started, which replaces
            # a connection the database dropped meanwhile and runs again
            # (jobs.tracking.run_tracking_statement).
            skip_next_health_check(connection)
        return
    # A failed task may have been interrupted mid-query (a soft time limit is
    # an exception raised wherever the code happens to be), leaving the
    # connection in a state Django does not know about. Start afresh.
    for connection in connections.all(initialized_only=True):
        connection.close()


@task_internal_error.connect(dispatch_uid="jobs.end_deferred_start_after_internal_error")
def end_deferred_start_after_internal_error(task_id=None, **kwargs) -> None:
    # Celery skips task_postrun when the end could not be stored (an error
    # "outside the body"): the deferred start is settled here instead.
    if task_id:
        starts.task_ended(task_id)


@worker_init.connect(dispatch_uid="jobs.open_end_batches")
def open_end_batches(sender=None, **kwargs) -> None:
    # Before the pool forks its children, which inherit the pipe.
    if sender is not None:
        end_batches.open_for(sender)
