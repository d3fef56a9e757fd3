"""Report runs in the admin: the list, the request page, regenerate."""

import pytest
from django.contrib.admin.models import ADDITION, CHANGE, LogEntry
from django.urls import reverse

from jobs.models import Job, JobStatus
from reports.models import ReportRun

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:reports_reportrun_changelist")
ADD = reverse("admin:reports_reportrun_add")


def test_the_list_shows_each_run_with_its_status_and_a_download_link(admin_client, generated, admin_user):
    run = generated("jobs.export", "csv", user=admin_user)
    Job.objects.filter(pk=run.job_id).update(status=JobStatus.SUCCESS)

    response = admin_client.get(CHANGELIST)

    assert response.status_code == 200
    assert "jobs.export" in response.text
    assert '<span class="job-status"' in response.text and "SUCCESS" in response.text
    assert f'href="/api/reports/{run.id}/download/"' in response.text


def test_the_download_link_works_with_the_admin_session(admin_client, generated, admin_user):
    run = generated("jobs.export", "csv", user=admin_user)

    response = admin_client.get(f"/api/reports/{run.id}/download/")

    assert response.status_code == 200
    assert b"".join(response.streaming_content).startswith(b"\xef\xbb\xbfJob id")


def test_the_request_page_lists_the_report_types_and_their_parameters(admin_client):
    response = admin_client.get(ADD)

    assert response.status_code == 200
    assert "Request a report" in response.text
    assert "<code>jobs.activity</code>" in response.text and "<code>bucket</code>" in response.text
    assert "reports.report_schedule_run" in response.text


def test_requesting_from_the_admin_creates_the_run_and_its_job(admin_client, admin_user):
    response = admin_client.post(
        ADD,
        {
            "type": "jobs.activity",
            "format": "xlsx",
            "params": '{"bucket": "hour"}',
            "email_to": "a@example.com, b@example.com",
        },
    )

    assert response.status_code == 302
    run = ReportRun.objects.get()
    assert (run.report_type, run.format, run.params["bucket"], run.owner) == (
        "jobs.activity",
        "xlsx",
        "hour",
        admin_user,
    )
    assert run.email_to == ["a@example.com", "b@example.com"]
    assert run.job.task_name == "reports.report_generate"
    assert LogEntry.objects.get(object_id=str(run.pk)).action_flag == ADDITION


def test_bad_parameters_are_shown_on_the_form_and_nothing_is_created(admin_client):
    response = admin_client.post(
        ADD,
        {"type": "jobs.export", "format": "csv", "params": '{"period": {"from": "2026-02-01", "to": "2026-01-01"}}'},
    )

    assert response.status_code == 200
    assert "params.period: from 2026-02-01 is after to 2026-01-01" in response.text
    assert not ReportRun.objects.exists() and not Job.objects.exists()


def test_regenerate_enqueues_a_new_job_for_the_same_run(admin_client, generated, admin_user):
    run = generated("jobs.export", "csv", user=admin_user)
    Job.objects.filter(pk=run.job_id).update(status=JobStatus.SUCCESS)

    admin_client.post(CHANGELIST, {"action": "regenerate", "_selected_action": [str(run.pk)]})

    run.refresh_from_db()
    assert Job.objects.filter(task_name="reports.report_generate").count() == 2
    assert run.job.status == JobStatus.PENDING
    assert LogEntry.objects.get(object_id=str(run.pk), action_flag=CHANGE).change_message.startswith("Regenerating")


def test_runs_are_read_only(admin_client, generated, admin_user):
    run = generated("jobs.export", "csv", user=admin_user)

    response = admin_client.get(reverse("admin:reports_reportrun_change", args=[run.pk]))

    assert response.status_code == 200
    assert run.file.name in response.text
    assert 'name="_save"' not in response.text


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ('{"task": "jobs.noop\\u0000"}', "NUL"),
        ('{"task": "\\ud800"}', "surrogate"),
        ('{"task": 1e400}', "finite"),
        ('{"task": ' + "[" * 40 + "]" * 40 + "}", "nested"),
    ],
)
def test_request_parameters_that_cannot_be_stored_are_a_form_error(admin_client, params, says):
    response = admin_client.post(ADD, {"type": "jobs.export", "format": "csv", "params": params})

    assert response.status_code == 200
    assert says in response.text and "errorlist" in response.text
    assert not ReportRun.objects.exists()
