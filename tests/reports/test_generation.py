"""Generating a file: streamed from a server-side cursor, written to a
temporary name and moved into place, progress reported, and idempotent."""

from datetime import datetime

import pytest
from django.db import connection

from jobs.exceptions import BadInput
from jobs.models import Job, JobStatus
from jobs.services import job_retry
from reports import services
from reports.models import ReportRun
from reports.registry import Column, ReportType, get_report_type
from tests.reports.conftest import UTC, make_job, stored
from tests.reports.readers import csv_rows

pytestmark = pytest.mark.django_db


def files_under(root) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file())


def test_generating_again_replaces_the_file_one_file_per_run(generated, reports_root):
    make_job("shop.invoice_render", created=datetime(2026, 3, 2, tzinfo=UTC))
    run = generated("jobs.export", "csv", {"period": {"from": "2026-03-01", "to": "2026-03-03"}})
    first_name = run.file.name
    make_job("shop.invoice_render", created=datetime(2026, 3, 2, 1, tzinfo=UTC))

    services.report_generate(run=run)
    run.refresh_from_db()

    assert run.file.name == first_name
    assert files_under(reports_root) == [first_name]
    assert len(csv_rows(stored(run))) == 3  # header and both jobs: the new content
    assert run.rows == 2


def test_the_stored_name_is_made_by_the_server(generated, reports_root):
    run = generated("jobs.export", "xlsx")

    assert run.file.name == f"reports/{run.created_at:%Y/%m}/{run.id.hex}.xlsx"
    assert stored(run).resolve().is_relative_to(reports_root.resolve())
    assert run.download_name.startswith("jobs-export-") and run.download_name.endswith(".xlsx")


def test_a_failure_mid_write_leaves_no_partial_file_and_keeps_the_previous_one(generated, registered, reports_root):
    @registered
    class Flaky(ReportType):
        name = "tests.flaky"
        columns = [Column("n")]
        fail = False

        def rows(self, params):
            for n in range(10_000):
                if n == 5000 and Flaky.fail:
                    raise ConnectionError("the database went away")
                yield (n,)

    run = generated("tests.flaky", "csv")
    before = stored(run).read_bytes()
    Flaky.fail = True

    with pytest.raises(ConnectionError):
        services.report_generate(run=run)

    assert files_under(reports_root) == [run.file.name]
    assert stored(run).read_bytes() == before


def test_querysets_are_read_through_a_server_side_cursor():
    for _ in range(3):
        make_job()
    report = get_report_type("jobs.export")
    rows = report.stream(report.rows(report.clean({})))

    next(rows)

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_cursors WHERE name LIKE '_django_curs_%%'")
        assert cursor.fetchone()[0] == 1
    rows.close()


def test_progress_is_reported_as_rows_are_written(generated, registered, settings, monkeypatch):
    @registered
    class Counting(ReportType):
        name = "tests.counting"
        columns = [Column("n")]

        def rows(self, params):
            return ((n,) for n in range(1000))

        def count(self, params, rows):
            return 1000

    settings.REPORTS_CHUNK_SIZE = 100
    monkeypatch.setattr(services._Progress, "INTERVAL_SECONDS", 0)
    run = services.report_request(report_type="tests.counting", format="csv")
    seen: list[tuple[int, str]] = []

    services.report_generate(run=run, progress=lambda percent, message: seen.append((percent, message)))

    assert seen[0] == (2, "querying")
    assert seen[1] == (14, "100 of 1,000 rows")
    assert seen[-2] == (95, "1,000 of 1,000 rows")
    assert seen[-1] == (97, "saving 1,000 rows")
    assert [percent for percent, _ in seen] == sorted(percent for percent, _ in seen)


def test_a_run_whose_type_is_gone_fails_as_bad_input(owner):
    run = ReportRun.objects.create(report_type="tests.removed", format="csv", owner=owner)

    with pytest.raises(BadInput, match="unknown report type 'tests.removed'"):
        services.report_generate(run=run)


def test_the_result_says_what_was_made(owner):
    make_job()
    run = services.report_request(report_type="jobs.export", format="csv", owner=owner)

    result = services.report_generate(run=run)

    assert result == {
        "run": str(run.id),
        "file": run.file.name,
        "rows": 2,
        "bytes": stored(run).stat().st_size,
        "emailed": 0,
    }


def test_a_retried_job_becomes_the_runs_job(owner):
    run = services.report_request(report_type="jobs.export", format="csv", owner=owner)
    Job.objects.filter(pk=run.job_id).update(status=JobStatus.FAILURE)

    retry = job_retry(job=Job.objects.get(pk=run.job_id))

    run.refresh_from_db()
    assert run.job_id == retry.id
    assert retry.args == [str(run.id)]
