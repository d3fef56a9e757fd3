"""The JSON API's console endpoints: retry and cancel with the admin's
permissions, list filters with 400s that name what is wrong, cursor pages,
the OpenAPI schema and its docs page, choice errors that list the choices,
deduplication said in the answer, and a JSON 404 for a malformed id."""

import json
from datetime import timedelta

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.utils import timezone
from drf_spectacular.drainage import GENERATOR_STATS

from jobs.models import Job, JobStatus
from jobs.services import enqueue

pytestmark = pytest.mark.django_db


def make_job(task_name="testapp.fail_with", *args, status=JobStatus.QUEUED, **fields) -> Job:
    job = enqueue(task_name, *args)
    Job.objects.filter(pk=job.pk).update(status=status, **fields)
    job.refresh_from_db()
    return job


def user_with(django_user_model, *codenames):
    user = django_user_model.objects.create_user("api-user", password="pw-123456")
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="jobs", codename__in=codenames))
    return user


# -- Retry and cancel ---------------------------------------------------------


def test_retry_answers_202_with_the_new_job_and_logs_it(admin_client, admin_user):
    failed = make_job(status=JobStatus.FAILURE, error="RuntimeError: x")

    response = admin_client.post(f"/api/jobs/{failed.pk}/retry/")

    assert response.status_code == 202
    retry = Job.objects.get(retry_of=failed)
    assert response.json()["id"] == str(retry.pk) and response.json()["retry_of"] == str(failed.pk)
    assert response["Location"].endswith(f"/api/jobs/{retry.pk}/")
    entry = LogEntry.objects.get(object_id=str(failed.pk))
    assert (entry.user, entry.change_message) == (admin_user, f"Retried as job {retry.pk} (API).")


def test_retrying_a_retried_job_retries_its_latest_attempt_or_says_why_not(admin_client):
    original = make_job(status=JobStatus.FAILURE, error="RuntimeError: x")
    first = admin_client.post(f"/api/jobs/{original.pk}/retry/").json()

    refused = admin_client.post(f"/api/jobs/{original.pk}/retry/")
    assert refused.status_code == 409
    assert refused.json()["detail"] == (
        f"Its latest attempt {first['id']} is PENDING; only failed, cancelled, dead or lost jobs can be retried."
    )

    Job.objects.filter(pk=first["id"]).update(status=JobStatus.FAILURE)
    second = admin_client.post(f"/api/jobs/{original.pk}/retry/").json()
    assert second["retry_of"] == first["id"]


def test_cancel_answers_the_cancelled_job_and_409_once_finished(admin_client):
    queued = make_job("jobs.noop", status=JobStatus.QUEUED)

    response = admin_client.post(f"/api/jobs/{queued.pk}/cancel/")
    again = admin_client.post(f"/api/jobs/{queued.pk}/cancel/")

    assert response.status_code == 200 and response.json()["status"] == "REVOKED"
    assert again.status_code == 409
    assert (
        again.json()["detail"]
        == f"Job {queued.pk} has already finished (REVOKED); only unfinished jobs can be cancelled."
    )


def test_retry_and_cancel_need_the_admin_permissions(client, django_user_model):
    client.force_login(user_with(django_user_model, "view_job"))
    failed = make_job(status=JobStatus.FAILURE)
    queued = make_job("jobs.noop")

    assert client.post(f"/api/jobs/{failed.pk}/retry/").status_code == 403
    assert client.post(f"/api/jobs/{queued.pk}/cancel/").status_code == 403
    assert not Job.objects.filter(retry_of=failed).exists()
    assert Job.objects.get(pk=queued.pk).status == JobStatus.QUEUED


def test_retry_and_cancel_of_someone_elses_job_without_view_permission_is_404(client, django_user_model):
    client.force_login(user_with(django_user_model, "retry_job", "cancel_job"))
    theirs = make_job(status=JobStatus.FAILURE)
    assert client.post(f"/api/jobs/{theirs.pk}/retry/").status_code == 404
    assert client.post(f"/api/jobs/{theirs.pk}/cancel/").status_code == 404


# -- Malformed ids --------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/jobs/not-a-uuid/", "/api/jobs/12345/retry/", "/api/jobs/x/cancel/"])
def test_a_malformed_job_id_is_a_json_404(admin_client, path):
    response = admin_client.post(path) if path.endswith(("retry/", "cancel/")) else admin_client.get(path)
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert "is not a job id (a UUID)" in response.json()["detail"]


# -- Filters and pages -------------------------------------------------------------


def test_the_list_filters_by_status_task_queue_and_creation_time(admin_client):
    now = timezone.now()
    old = make_job("jobs.noop", status=JobStatus.SUCCESS, created_at=now - timedelta(hours=2))
    new_noop = make_job("jobs.noop", status=JobStatus.SUCCESS)
    failed = make_job("testapp.fail_with", "x", status=JobStatus.FAILURE, error="RuntimeError: the disk is on fire")

    def ids(**params):
        response = admin_client.get("/api/jobs/", params)
        assert response.status_code == 200, response.json()
        return {job["id"] for job in response.json()["results"]}

    assert ids(status="FAILURE") == {str(failed.pk)}
    assert ids(task="jobs.noop") == {str(old.pk), str(new_noop.pk)}
    assert ids(queue="default", status="SUCCESS") == {str(old.pk), str(new_noop.pk)}
    hour_ago = (now - timedelta(hours=1)).isoformat()
    assert ids(task="jobs.noop", created_after=hour_ago) == {str(new_noop.pk)}
    assert ids(created_before=hour_ago) == {str(old.pk)}
    assert ids(q="on fire") == {str(failed.pk)}


@pytest.mark.parametrize(
    ("params", "field", "message"),
    [
        ({"taks": "jobs.noop"}, "taks", "Unknown filter 'taks'. Filters: status, task, queue,"),
        ({"status": "DONE"}, "status", "Unknown status 'DONE'. One of: PENDING, QUEUED,"),
        ({"task": "jobs.nope"}, "task", "Unknown task 'jobs.nope'. One of: "),
        ({"queue": "video"}, "queue", "Unknown queue 'video'. One of: default, images, email, reports."),
        ({"created_after": "yesterday"}, "created_after", "'yesterday' is not an ISO 8601 time with a zone"),
        ({"created_before": "2026-12-06T05:00:00"}, "created_before", "is not an ISO 8601 time with a zone"),
    ],
)
def test_an_unknown_filter_or_value_is_a_400_naming_it(admin_client, params, field, message):
    response = admin_client.get("/api/jobs/", params)
    assert response.status_code == 400
    assert message in response.json()[field]


def test_the_list_pages_with_a_cursor(admin_client, monkeypatch):
    from jobs import api

    monkeypatch.setattr(api.JobCursor, "page_size", 2)
    jobs = [make_job("jobs.noop", status=JobStatus.SUCCESS) for _ in range(5)]
    seen, url = [], "/api/jobs/"
    while url:
        body = admin_client.get(url).json()
        seen += [job["id"] for job in body["results"]]
        url = body["next"]
    assert seen == [str(job.pk) for job in sorted(jobs, key=lambda job: job.created_at, reverse=True)]


# -- Enqueue answers -----------------------------------------------------------------


def post_job(client, body):
    return client.post("/api/jobs/", data=json.dumps(body), content_type="application/json")


def test_a_deduplicated_request_says_so(admin_client):
    first = post_job(admin_client, {"task": "jobs.noop", "unique_key": "nightly"})
    second = post_job(admin_client, {"task": "jobs.noop", "unique_key": "nightly"})

    assert first.status_code == 202 and first.json()["deduplicated"] is False
    assert second.status_code == 200
    assert second.json()["id"] == first.json()["id"] and second.json()["deduplicated"] is True
    assert "already active" in second.json()["detail"]


def test_a_choice_error_lists_the_valid_values(admin_client):
    response = post_job(admin_client, {"task": "jobs.noop", "priority": "urgent"})
    assert response.status_code == 400
    assert response.json()["priority"] == ['"urgent" is not a valid choice. Valid: high, medium, low.']


# -- OpenAPI -------------------------------------------------------------------------


def test_the_openapi_schema_covers_every_endpoint_and_the_docs_page_is_served(admin_client):
    schema = admin_client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    docs = admin_client.get("/api/docs/")

    paths = set(schema["paths"])
    for expected in (
        "/api/jobs/",
        "/api/jobs/{job_id}/",
        "/api/jobs/{job_id}/retry/",
        "/api/jobs/{job_id}/cancel/",
        "/api/jobs/bulk/",
        "/api/jobs/tasks/",
        "/api/images/",
        "/api/mail/messages/",
        "/api/reports/",
    ):
        assert expected in paths
    list_parameters = {parameter["name"] for parameter in schema["paths"]["/api/jobs/"]["get"]["parameters"]}
    assert {"status", "task", "queue", "created_after", "created_before", "cursor"} <= list_parameters
    assert docs.status_code == 200
    html = docs.content.decode()
    assert "swagger-ui" in html and "cdn." not in html and "jsdelivr" not in html


def test_the_openapi_schema_generates_without_an_error_or_a_warning(tmp_path, capsys):
    # What `manage.py spectacular --validate --fail-on-warn` checks: a view
    # whose serializer drf-spectacular cannot guess is an error it leaves out
    # of the schema, and a clash of names a warning.
    GENERATOR_STATS.reset()  # the counts are per process; count this run's
    schema_file = tmp_path / "schema.json"
    try:
        call_command(
            "spectacular", "--validate", "--fail-on-warn", "--format", "openapi-json", "--file", str(schema_file)
        )
    except Exception as exc:
        pytest.fail(f"{exc}: {capsys.readouterr().err}")
    schema = json.loads(schema_file.read_text())

    def answer(path: str, method: str, code: str = "200") -> dict:
        return schema["paths"][path][method]["responses"][code]["content"]["application/json"]["schema"]

    # The domain APIs answer with their own shapes, not an untyped object.
    assert answer("/api/images/{image_id}/", "get") == {"$ref": "#/components/schemas/ImageResponse"}
    assert answer("/api/images/batches/", "post", "202") == {"$ref": "#/components/schemas/BatchResponse"}
    assert answer("/api/mail/messages/", "post", "202") == {"$ref": "#/components/schemas/MessageQueuedResponse"}
    assert answer("/api/mail/campaigns/{campaign_id}/", "get") == {"$ref": "#/components/schemas/CampaignResponse"}
    assert answer("/api/reports/", "get") == {"$ref": "#/components/schemas/ReportRunListResponse"}
    assert answer("/api/reports/types/", "get") == {"$ref": "#/components/schemas/ReportTypeCatalogueResponse"}
    upload = schema["paths"]["/api/images/"]["post"]["requestBody"]["content"]
    assert list(upload) == ["multipart/form-data"]
    assert schema["components"]["schemas"]["ImageUploadRequest"]["properties"]["file"]["format"] == "binary"
    download = schema["paths"]["/api/reports/{run_id}/download/"]["get"]["responses"]["200"]["content"]
    assert "text/csv; charset=utf-8" in download and "application/pdf" in download
