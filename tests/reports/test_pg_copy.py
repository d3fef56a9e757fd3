"""CSV on PostgreSQL is written by COPY; it must be the very file the
Python writer makes from the same rows."""

import threading
from datetime import datetime, timedelta

import pytest
from django.db import connections
from django.db.models import BooleanField, DurationField, ExpressionWrapper, F, IntegerField, JSONField, Q, Value
from django.db.models.functions import TruncDate

from jobs.models import Job, JobStatus
from jobs.tracking import job_report_progress
from reports import services
from reports.models import ReportRun
from reports.registry import Column, ReportType
from reports.writers import pg_copy
from tests.reports.conftest import UTC, make_job, stored
from tests.reports.readers import csv_rows

pytestmark = pytest.mark.django_db

AWKWARD = [
    "",
    "=1+1",
    "+33 6 12",
    "-minus",
    "@mention",
    "\tindented",
    "\r=carriage",
    "line\nbreak",
    'say "hi"',
    "comma, inside",
    "café ✓ 東京",
    "plain",
]


# JSON as Django decodes it: numbers, strings, null, true, containers.
ARGS = [[0, "x", {"k": None}], -5, "=text", None, True, {"b": 1.5, "a": "é"}, 2.5]


@pytest.fixture
def awkward_jobs():
    start = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)  # Paris moves to summer time at 01:00 UTC
    for index, error in enumerate(AWKWARD):
        job = make_job(
            f"task.{index % 3}",
            created=start + timedelta(minutes=17 * index),
            error=error,
            status=JobStatus.QUEUED if index == 4 else JobStatus.SUCCESS,
            wait=None if index == 4 else 0.125 * index,
            runtime=1 / 3 + index,
        )
        args = ARGS[index % len(ARGS)]
        # JSON null, not SQL NULL (which args does not allow).
        Job.objects.filter(pk=job.pk).update(args=Value(None, JSONField()) if args is None else args, attempts=index)


@pytest.fixture
def mixed_types(registered):
    @registered
    class Mixed(ReportType):
        name = "tests.mixed"
        title = "Mixed"
        # Not the SQL order: values() is matched by key.
        columns = [
            Column("error"),
            Column("id"),
            Column("attempts"),
            Column("created_at"),
            Column("started_at"),
            Column("day"),
            Column("ok"),
            Column("runtime"),
            Column("args"),
            Column("negative"),
        ]

        def rows(self, params):
            return (
                Job.objects.filter(task_name__startswith="task.")  # not the reports' own jobs
                .annotate(
                    day=TruncDate("created_at"),
                    ok=ExpressionWrapper(Q(status=JobStatus.SUCCESS), output_field=BooleanField()),
                    runtime=ExpressionWrapper(F("finished_at") - F("started_at"), output_field=DurationField()),
                    negative=ExpressionWrapper(F("attempts") * -1 - 1, output_field=IntegerField()),
                )
                .order_by("created_at")
                .values(
                    "id", "args", "negative", "ok", "error", "attempts", "created_at", "started_at", "day", "runtime"
                )
            )


def both_ways(generated, monkeypatch, report_type: str, params=None) -> tuple[bytes, bytes]:
    copied = generated(report_type, "csv", params)
    monkeypatch.setattr(pg_copy, "copy_plan", lambda *args: None)
    written = generated(report_type, "csv", params)
    return stored(copied).read_bytes(), stored(written).read_bytes()


def test_the_jobs_export_is_the_same_file_by_copy_and_by_python(generated, awkward_jobs, monkeypatch, settings):
    settings.TIME_ZONE = "Europe/Paris"

    by_copy, by_python = both_ways(
        generated, monkeypatch, "jobs.export", {"period": {"from": "2026-03-29", "to": "2026-03-29"}}
    )

    assert by_copy == by_python
    rows = csv_rows_of(by_copy)
    assert len(rows) == len(AWKWARD) + 1
    assert rows[1][6] == "2026-03-29T01:30:00.000000+01:00" and rows[3][6] == "2026-03-29T03:04:00.000000+02:00"


def test_every_kind_of_value_is_the_same_by_copy_and_by_python(
    generated, awkward_jobs, mixed_types, monkeypatch, settings
):
    settings.TIME_ZONE = "America/New_York"

    by_copy, by_python = both_ways(generated, monkeypatch, "tests.mixed")

    assert by_copy == by_python
    header, *rows = csv_rows_of(by_copy)
    first = rows[0]
    assert header == ["Error", "Id", "Attempts", "Created at", "Started at", "Day", "Ok", "Runtime", "Args", "Negative"]
    assert first[2] == "0" and first[6] == "True" and first[8] == '[0, "x", {"k": null}]' and first[9] == "-1"
    assert [row[8] for row in rows[:7]] == [
        '[0, "x", {"k": null}]',
        "-5",
        "'=text",
        "",
        "True",
        '{"a": "é", "b": 1.5}',
        "2.5",
    ]


def test_copy_is_used_for_querysets_on_postgresql(generated, monkeypatch):
    make_job()
    calls = []
    monkeypatch.setattr(pg_copy, "write", lambda *args: calls.append(args) or args[0].write_bytes(b""))

    generated("jobs.export", "csv")
    generated("jobs.activity", "csv")  # rows from a generator: the Python writer
    generated("jobs.export", "xlsx")

    assert len(calls) == 1


def test_copy_can_be_turned_off(generated, monkeypatch, settings):
    settings.REPORTS_CSV_WITH_COPY = False
    calls = []
    monkeypatch.setattr(pg_copy, "write", lambda *args: calls.append(args))

    run = generated("jobs.export", "csv")

    assert calls == []
    assert csv_rows(stored(run))[0][0] == "Job id"


def test_copy_keeps_the_rows_neutralised(generated):
    make_job(error='=HYPERLINK("http://evil.example")')

    run = generated("jobs.export", "csv")

    assert csv_rows(stored(run))[1][13] == '\'=HYPERLINK("http://evil.example")'


def csv_rows_of(data: bytes) -> list[list[str]]:
    import csv
    import io

    return list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))


@pytest.mark.django_db(transaction=True)
def test_progress_is_written_while_copy_streams(settings, monkeypatch):
    """A worker reports progress on Django's connection while the rows
    stream; COPY must not hold that connection (it would deadlock)."""
    for _ in range(30):
        make_job()
    tracked = make_job("reports.report_generate", status=JobStatus.STARTED)
    run = ReportRun.objects.create(report_type="jobs.export", format="csv", params={"task": "shop.invoice_render"})
    settings.REPORTS_CHUNK_SIZE = 5
    monkeypatch.setattr(services._Progress, "INTERVAL_SECONDS", 0)
    seen: list[str] = []

    def progress(percent: int, message: str) -> None:
        job_report_progress(job_id=str(tracked.id), percent=percent, message=message)
        seen.append(message)

    def generate() -> None:
        try:
            services.report_generate(run=run, progress=progress)
        finally:
            connections.close_all()

    # In a thread, so a deadlock fails the test instead of hanging it.
    thread = threading.Thread(target=generate, daemon=True)
    thread.start()
    thread.join(timeout=30)

    assert not thread.is_alive(), "COPY and a progress write deadlocked on one connection"
    assert "15 of 30 rows" in seen
    tracked.refresh_from_db()
    assert (tracked.progress, tracked.progress_message) == (97, "saving 30 rows")
