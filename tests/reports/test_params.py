"""A bad request is refused with a 400 and a clear message when it is made,
never as a failed job later."""

from datetime import date, timedelta

import pytest
from django.utils import timezone

from jobs.models import Job
from jobs.queues import Queue
from reports.models import ReportRun
from reports.registry import report_types
from tests.reports.conftest import api

pytestmark = pytest.mark.django_db


def ask(user, body: dict):
    return api(user).post("/api/reports/", body, format="json")


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        (
            {"type": "jobs.nothing", "format": "csv"},
            {"type": f"unknown report type 'jobs.nothing'; available: {', '.join(report_types())}"},
        ),
        (
            {"type": "jobs.export", "format": "csv", "params": {"period": {"from": "2026-02-01", "to": "2026-01-01"}}},
            {"params.period": "from 2026-02-01 is after to 2026-01-01"},
        ),
        (
            {"type": "jobs.export", "format": "csv", "params": {"period": {"from": "2025-01-01", "to": "2026-12-31"}}},
            {"params.period": "730 days is longer than the 366 days allowed"},
        ),
        (
            {"type": "jobs.export", "format": "csv", "params": {"period": {"from": "1 March", "to": "today"}}},
            {"params.period": "from must be a date like 2026-11-30, today or yesterday; got '1 March'"},
        ),
        (
            {"type": "jobs.export", "format": "csv", "params": {"colour": "red"}},
            {"params.colour": "unknown parameter; this report takes: period, task, queue, status"},
        ),
        (
            {"type": "jobs.export", "format": "csv", "params": {"status": ["SUCCESS", "SLEEPING"]}},
            {
                "params.status": (
                    "unknown value 'SLEEPING'; one of: "
                    "PENDING, QUEUED, STARTED, RETRYING, SUCCESS, FAILURE, REVOKED, DEAD, LOST"
                )
            },
        ),
        (
            {"type": "jobs.activity", "format": "csv", "params": {"bucket": "hour", "period": {"last_days": 60}}},
            {"params.period": "hourly rows cover at most 31 days, this period has 60; use bucket day"},
        ),
        (
            {"type": "jobs.activity", "format": "csv", "params": {"queue": "nowhere"}},
            {"params.queue": f"unknown value 'nowhere'; one of: {', '.join(queue.value for queue in Queue)}"},
        ),
        (
            {"type": "jobs.export", "format": "csv", "email_to": ["not an address"]},
            {"email_to": "'not an address' is not a valid email address"},
        ),
    ],
    ids=[
        "unknown-type",
        "reversed-range",
        "range-too-long",
        "not-a-date",
        "unknown-filter",
        "unknown-status",
        "hourly-too-long",
        "unknown-queue",
        "bad-address",
    ],
)
def test_a_bad_request_is_refused_with_a_400_that_says_why_and_creates_nothing(owner, body, errors):
    response = ask(owner, body)

    assert response.status_code == 400, response.json()
    assert response.json() == errors
    assert not ReportRun.objects.exists()
    assert not Job.objects.exists()


def test_a_format_the_api_does_not_know_is_a_400(owner):
    response = ask(owner, {"type": "jobs.export", "format": "docx"})

    assert response.status_code == 400
    assert "format" in response.json()


def test_a_format_the_report_type_is_not_made_in_is_a_400(owner, registered):
    from reports.registry import Column, ReportType

    @registered
    class CsvOnly(ReportType):
        name = "tests.csv_only"
        columns = [Column("x")]
        formats = ("csv",)

    response = ask(owner, {"type": "tests.csv_only", "format": "pdf"})

    assert response.status_code == 400
    assert response.json() == {"format": "unknown format 'pdf'; tests.csv_only is made as csv"}


def test_relative_dates_are_resolved_when_the_report_is_asked_for(owner):
    today = timezone.localdate()

    response = ask(owner, {"type": "jobs.activity", "format": "csv", "params": {"period": {"last_days": 7}}})

    assert response.status_code == 202
    run = ReportRun.objects.get()
    # What is stored (and replayed by a retry tomorrow) is the dates.
    assert run.params == {
        "period": {"from": (today - timedelta(days=6)).isoformat(), "to": today.isoformat()},
        "bucket": "day",
    }


def test_omitted_parameters_take_their_defaults(owner):
    ask(owner, {"type": "jobs.export", "format": "csv"})

    params = ReportRun.objects.get().params
    assert set(params) == {"period"}
    assert date.fromisoformat(params["period"]["to"]) == timezone.localdate()


def test_yesterday_and_today_are_dates(owner):
    today = timezone.localdate()

    ask(owner, {"type": "jobs.export", "format": "csv", "params": {"period": {"from": "yesterday", "to": "today"}}})

    assert ReportRun.objects.get().params["period"] == {
        "from": (today - timedelta(days=1)).isoformat(),
        "to": today.isoformat(),
    }
