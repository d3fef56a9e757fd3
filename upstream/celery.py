"""Celery: the Django fix-up's database connection handling.

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
