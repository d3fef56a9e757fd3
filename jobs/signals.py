"""Celery signal wiring of the job core: database connections in workers.

Celery's Django fixup closes every connection before and after each task
unless CELERY_DB_REUSE_MAX is set (Celery reverted honouring CONN_MAX_AGE,
celery/celery#9824); a new PostgreSQL connection per task is what makes the
common setup slow. The settings set CELERY_DB_REUSE_MAX high, and this
handler applies Django's own rules instead.
"""

from celery import states
from celery.signals import task_postrun
from django.db import close_old_connections, connections


@task_postrun.connect(dispatch_uid="jobs.release_database_connections")
def release_database_connections(state=None, **kwargs) -> None:
    if state == states.SUCCESS:
        # Closes what is past CONN_MAX_AGE or broken, and makes the next use
        # run the CONN_HEALTH_CHECKS probe (a restarted database is noticed).
        close_old_connections()
        return
    # A failed task may have been interrupted mid-query (a soft time limit is
    # an exception raised wherever the code happens to be), leaving the
    # connection in a state Django does not know about. Start afresh.
    for connection in connections.all(initialized_only=True):
        connection.close()
