"""Scheduled reports: a django-celery-beat PeriodicTask calls
reports.report_schedule_run with the report's kwargs; each tick makes one
run and its job."""

import inspect
import json
from datetime import timedelta

import pytest
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from jobs.exceptions import BadInput
from jobs.registry import get_job_task
from reports import scheduling
from reports.models import ReportRun
from reports.params import InvalidParams

pytestmark = pytest.mark.django_db

KWARGS = {
    "type": "jobs.activity",
    "format": "pdf",
    "params": {"period": {"last_days": 7}, "bucket": "day"},
    "owner": "olivia",
    "email_to": ["ops@example.com"],
}


def test_a_scheduled_run_resolves_its_dates_at_the_tick_and_enqueues_the_report(owner):
    today = timezone.localdate()

    run = scheduling.report_schedule_run(
        report_type="jobs.activity",
        format="pdf",
        params=KWARGS["params"],
        owner="olivia",
        email_to=["ops@example.com"],
        idempotency_key="schedule:1",
    )

    assert run.owner == owner
    assert run.params["period"] == {"from": (today - timedelta(days=6)).isoformat(), "to": today.isoformat()}
    assert run.email_to == ["ops@example.com"]
    assert run.job.task_name == "reports.report_generate"


def test_a_redelivered_tick_finds_the_run_it_already_made(owner):
    first = scheduling.report_schedule_run(
        report_type="jobs.export", format="csv", owner=owner.pk, idempotency_key="schedule:42"
    )
    second = scheduling.report_schedule_run(
        report_type="jobs.export", format="csv", owner=owner.pk, idempotency_key="schedule:42"
    )

    assert second.pk == first.pk
    assert ReportRun.objects.count() == 1


def test_an_unknown_owner_fails_the_tick_as_bad_input(db):
    with pytest.raises(BadInput, match="owner 'ghost' is not a user"):
        scheduling.report_schedule_run(report_type="jobs.export", format="csv", owner="ghost")


def test_a_schedule_is_a_periodic_task_for_the_database_scheduler(owner):
    task = scheduling.report_schedule_create(
        name="weekly activity",
        crontab={"minute": "0", "hour": "6", "day_of_week": "1"},
        report_type="jobs.activity",
        format="pdf",
        params=KWARGS["params"],
        owner="olivia",
        email_to=["ops@example.com"],
    )

    stored = PeriodicTask.objects.get(name="weekly activity")
    assert stored.task == "reports.report_schedule_run"
    assert (stored.crontab.hour, stored.crontab.day_of_week) == ("6", "1")
    # Relative dates stay relative: each tick reports its own last week.
    assert json.loads(stored.kwargs) == KWARGS
    assert task.enabled
    # What beat will call takes exactly these arguments.
    inspect.signature(get_job_task(stored.task).run).bind(**json.loads(stored.kwargs))


def test_a_schedule_with_bad_parameters_is_refused_when_it_is_made(owner):
    with pytest.raises(InvalidParams, match="params.bucket: unknown value 'week'"):
        scheduling.report_schedule_create(
            name="broken", every_seconds=3600, report_type="jobs.activity", format="csv", params={"bucket": "week"}
        )

    assert not PeriodicTask.objects.filter(name="broken").exists()


def test_the_scheduled_task_is_not_open_to_the_jobs_api():
    assert not get_job_task("reports.report_schedule_run").public
    assert not get_job_task("reports.report_generate").public
    assert get_job_task("reports.report_schedule_run").queue == "default"
    assert get_job_task("reports.report_generate").queue == "reports"
