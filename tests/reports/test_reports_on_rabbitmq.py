"""Reports through a real worker on RabbitMQ and PostgreSQL."""

import json
from datetime import timedelta

import pytest
from django.utils import timezone
from django_celery_results.models import TaskResult

from jobs.models import Job, JobStatus
from jobs.registry import get_job_task
from mail_tasks.models import OutboundMessage
from reports.models import ReportRun
from tests.helpers import wait_for
from tests.reports.conftest import api
from tests.reports.readers import csv_rows, pdf_text, xlsx_sheets

pytestmark = pytest.mark.integration

ROWS = 2500


def finished(job: Job, worker, timeout: float = 60) -> Job:
    def reload():
        job.refresh_from_db()
        return job.is_finished

    wait_for(reload, timeout=timeout, what=f"job {job.task_name} to finish (status {job.status})")
    assert job.status == JobStatus.SUCCESS, f"{job.error}\n{worker.read_log()[-3000:]}"
    return job


@pytest.fixture
def invoices():
    created = timezone.now() - timedelta(hours=1)
    Job.objects.bulk_create(
        Job(
            task_name="shop.invoice_render",
            queue="default",
            status=JobStatus.SUCCESS if n % 10 else JobStatus.FAILURE,
            queued_at=created,
            started_at=created + timedelta(seconds=1),
            finished_at=created + timedelta(seconds=2 + n % 7),
            error="" if n % 10 else '=HYPERLINK("http://evil.example")',
        )
        for n in range(ROWS)
    )


def test_a_report_asked_over_the_api_is_made_by_a_worker_and_downloaded(start_worker, owner, invoices, tmp_path):
    worker = start_worker(queues="reports")

    response = api(owner).post(
        "/api/reports/",
        {"type": "jobs.export", "format": "xlsx", "params": {"task": "shop.invoice_render"}},
        format="json",
    )
    assert response.status_code == 202
    job = finished(Job.objects.get(pk=response.json()["job"]["id"]), worker)

    assert (job.progress, job.attempts) == (100, 1)
    body = api(owner).get(response["Location"]).json()
    assert (body["status"], body["rows"]) == ("SUCCESS", ROWS)
    download = api(owner).get(body["download_url"])
    assert download.status_code == 200
    path = tmp_path / "downloaded.xlsx"
    path.write_bytes(b"".join(download.streaming_content))
    (rows,) = xlsx_sheets(path).values()
    assert len(rows) == ROWS + 1
    assert {row[1] for row in rows[1:]} == {"shop.invoice_render"}
    assert sum(1 for row in rows if row[13] == '=HYPERLINK("http://evil.example")') == ROWS // 10
    result = json.loads(TaskResult.objects.get(task_id=str(job.id)).result)
    assert result["rows"] == ROWS and result["file"] == ReportRun.objects.get().file.name


def test_a_scheduled_tick_makes_a_run_that_a_worker_generates_and_emails(start_worker, owner, invoices):
    worker = start_worker(queues="default,reports")
    kwargs = {
        "type": "jobs.activity",
        "format": "pdf",
        "params": {"period": {"last_days": 1}, "bucket": "hour"},
        "owner": owner.username,
        "email_to": ["ops@example.com"],
    }

    # What beat does with a PeriodicTask: apply_async on the task by name.
    tick = get_job_task("reports.report_schedule_run").apply_async(kwargs=kwargs)
    finished(Job.objects.get(pk=tick.id), worker)
    run = ReportRun.objects.get()
    finished(run.job, worker)

    run.refresh_from_db()
    assert run.owner == owner and run.idempotency_key == f"schedule:{tick.id}"
    text = pdf_text(run.file.path)
    assert "Job activity" in text and "Jobs per period, by outcome" in text
    assert "shop.invoice_render" in text
    message = OutboundMessage.objects.get()
    assert message.to == "ops@example.com" and message.attachments.count() == 1


def test_a_csv_export_is_written_by_copy_in_the_worker(start_worker, owner, invoices):
    worker = start_worker(queues="reports")

    response = api(owner).post(
        "/api/reports/",
        {"type": "jobs.export", "format": "csv", "params": {"task": "shop.invoice_render"}},
        format="json",
    )
    finished(Job.objects.get(pk=response.json()["job"]["id"]), worker)

    run = ReportRun.objects.get()
    header, *rows = csv_rows(run.file.path)
    assert len(rows) == run.rows == ROWS
    assert header[0] == "Job id" and {row[1] for row in rows} == {"shop.invoice_render"}
    assert sum(1 for row in rows if row[13] == '\'=HYPERLINK("http://evil.example")') == ROWS // 10
