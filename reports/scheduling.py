"""Scheduled reports: django-celery-beat's database scheduler (editable in
the admin) runs reports.report_schedule_run with a PeriodicTask's kwargs;
each tick makes one run and its job. See reports/README.md."""

import json
from collections.abc import Sequence
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

from jobs.exceptions import BadInput
from reports.models import ReportRun
from reports.services import SCHEDULE_TASK, report_check, report_request


def _resolve_owner(owner: int | str | None):
    if owner is None or owner == "":
        return None
    users = get_user_model().objects
    user = users.filter(pk=owner).first() if isinstance(owner, int) else users.filter(username=owner).first()
    if user is None:
        raise BadInput(f"owner {owner!r} is not a user (give a username or a user id)")
    return user


def report_schedule_run(
    *,
    report_type: str,
    format: str,
    params: Any = None,
    owner: int | str | None = None,
    email_to: Sequence[str] = (),
    idempotency_key: str | None = None,
) -> ReportRun:
    """One run of a scheduled report. Relative dates ({"last_days": 7}) are
    resolved now; `idempotency_key` (the beat job's id) makes a redelivered
    message find the run it made."""
    return report_request(
        report_type=report_type,
        format=format,
        params=params,
        owner=_resolve_owner(owner),
        email_to=email_to,
        idempotency_key=idempotency_key,
    )


def report_schedule_create(
    *,
    name: str,
    report_type: str,
    format: str,
    params: Any = None,
    owner: int | str | None = None,
    email_to: Sequence[str] = (),
    crontab: dict[str, str] | None = None,
    every_seconds: int | None = None,
) -> PeriodicTask:
    """A django-celery-beat PeriodicTask running the report on a schedule,
    its arguments checked now rather than at the first tick. `crontab` takes
    CrontabSchedule's fields ({"minute": "0", "hour": "6"}); or
    `every_seconds`. The same as adding one in the admin (reports/README.md)."""
    if (crontab is None) == (every_seconds is None):
        raise BadInput("give either crontab or every_seconds")
    # Checked as a request would be; stored as given, so relative ranges
    # stay relative and each tick reports its own days.
    report_check(report_type=report_type, format=format, params=params, owner=_resolve_owner(owner), email_to=email_to)
    schedule = {}
    if crontab is not None:
        schedule["crontab"], _ = CrontabSchedule.objects.get_or_create(**crontab, timezone=settings.TIME_ZONE)
    else:
        schedule["interval"], _ = IntervalSchedule.objects.get_or_create(
            every=every_seconds, period=IntervalSchedule.SECONDS
        )
    kwargs = {"type": report_type, "params": params or {}, "format": format, "owner": owner, "email_to": list(email_to)}
    return PeriodicTask.objects.create(name=name, task=SCHEDULE_TASK, kwargs=json.dumps(kwargs), **schedule)
