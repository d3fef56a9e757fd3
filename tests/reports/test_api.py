"""The report API: ask (202 and a job), follow, download; who may do what."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from jobs.models import Job, JobStatus
from reports.models import ReportRun
from tests.reports.conftest import api, make_job, make_user

pytestmark = pytest.mark.django_db


def download_url(run: ReportRun) -> str:
    return f"/api/reports/{run.id}/download/"


@pytest.fixture
def ready_run(generated):
    make_job("shop.invoice_render")
    # The report's own job is a job too: the filter leaves it out.
    return generated("jobs.export", "csv", {"task": "shop.invoice_render"})


def test_asking_for_a_report_answers_202_with_its_job_and_location(owner):
    response = api(owner).post(
        "/api/reports/", {"type": "jobs.activity", "format": "pdf", "params": {"bucket": "hour"}}, format="json"
    )

    assert response.status_code == 202
    body = response.json()
    run = ReportRun.objects.get()
    assert response["Location"] == f"http://testserver/api/reports/{run.id}/" == body["url"]
    assert (body["type"], body["title"], body["format"], body["status"]) == (
        "jobs.activity",
        "Job activity",
        "pdf",
        "PENDING",
    )
    assert body["download_url"] is None
    job = Job.objects.get(pk=body["job"]["id"])
    assert (job.task_name, job.queue, job.args, job.requested_by) == (
        "reports.report_generate",
        "reports",
        [str(run.id)],
        owner,
    )
    assert run.job == job and run.owner == owner


def test_asking_needs_the_add_permission(db):
    nobody = make_user("nina", "jobs.view_job")

    response = api(nobody).post("/api/reports/", {"type": "jobs.export", "format": "csv"}, format="json")

    assert response.status_code == 403
    assert "reports.add_reportrun" in response.json()["detail"]


def test_the_job_reports_need_the_permission_to_see_every_job(db):
    limited = make_user("lee", "reports.add_reportrun")

    response = api(limited).post("/api/reports/", {"type": "jobs.export", "format": "csv"}, format="json")

    assert response.status_code == 403
    assert "needs reports.add_reportrun, jobs.view_job" in response.json()["detail"]
    assert not ReportRun.objects.exists()


def test_anonymous_requests_get_nothing(ready_run):
    anonymous = APIClient()

    assert anonymous.post("/api/reports/", {"type": "jobs.export", "format": "csv"}, format="json").status_code == 401
    assert anonymous.get(f"/api/reports/{ready_run.id}/").status_code == 401
    response = anonymous.get(download_url(ready_run))
    assert response.status_code == 401
    assert not hasattr(response, "streaming_content")


def test_the_owner_follows_the_run_and_finds_the_download_link_once_ready(owner, ready_run):
    body = api(owner).get(f"/api/reports/{ready_run.id}/").json()

    assert body["rows"] == 1 and body["bytes"] == ready_run.size
    assert body["download_url"] == f"http://testserver{download_url(ready_run)}"
    assert body["expired"] is False


def test_the_owner_downloads_the_file_as_an_attachment(owner, ready_run):
    response = api(owner).get(download_url(ready_run))

    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith('attachment; filename="jobs-export-')
    assert response["Cache-Control"] == "private, no-store"
    content = b"".join(response.streaming_content)
    assert content.startswith(b"\xef\xbb\xbfJob id,Task,")
    assert b"shop.invoice_render" in content


def test_a_token_works_as_well_as_a_session(owner, ready_run):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=owner).key}")

    assert client.get(download_url(ready_run)).status_code == 200


def test_another_user_gets_404_for_the_run_and_its_file(stranger, ready_run):
    assert api(stranger).get(f"/api/reports/{ready_run.id}/").status_code == 404
    assert api(stranger).get(download_url(ready_run)).status_code == 404
    assert api(stranger).get("/api/reports/").json() == {"results": []}


def test_staff_with_the_view_permission_downloads_anyones_report(staff, ready_run):
    response = api(staff).get(download_url(ready_run))

    assert response.status_code == 200
    assert b"shop.invoice_render" in b"".join(response.streaming_content)


def test_staff_without_the_view_permission_is_like_anyone_else(ready_run):
    bare_staff = User.objects.create_user("basil", is_staff=True)

    assert api(bare_staff).get(download_url(ready_run)).status_code == 404


def test_a_report_not_generated_yet_answers_409(owner):
    api(owner).post("/api/reports/", {"type": "jobs.export", "format": "csv"}, format="json")
    run = ReportRun.objects.get()
    Job.objects.filter(pk=run.job_id).update(status=JobStatus.STARTED, progress=40)

    response = api(owner).get(download_url(run))

    assert response.status_code == 409
    assert response.json() == {"detail": "The report is not ready yet (job STARTED); try again when it is SUCCESS."}


def test_an_expired_report_answers_410_even_before_the_clean_up_ran(owner, ready_run):
    ReportRun.objects.filter(pk=ready_run.pk).update(expires_at=timezone.now() - timedelta(seconds=1))

    response = api(owner).get(download_url(ready_run))

    assert response.status_code == 410
    assert "expired" in response.json()["detail"]
    assert api(owner).get(f"/api/reports/{ready_run.id}/").json()["expired"] is True


def test_the_list_shows_the_users_own_runs_newest_first(owner, stranger, generated):
    older = generated("jobs.export", "csv")
    newer = generated("jobs.export", "xlsx")
    generated("jobs.export", "csv", user=stranger)

    results = api(owner).get("/api/reports/").json()["results"]

    assert [result["id"] for result in results] == [str(newer.id), str(older.id)]


def test_the_catalogue_lists_the_types_a_user_may_ask_for(owner, db):
    types = api(owner).get("/api/reports/types/").json()["types"]
    limited = api(make_user("lee", "reports.add_reportrun")).get("/api/reports/types/").json()["types"]

    activity = next(t for t in types if t["name"] == "jobs.activity")
    assert activity["formats"] == ["csv", "xlsx", "pdf"]
    assert activity["params"]["bucket"] == {
        "kind": "choice",
        "required": False,
        "default": "day",
        "choices": ["hour", "day"],
        "many": False,
        "help": "Rows per hour (periods up to 31 days) or per day.",
    }
    assert "Runtime p95 (s)" in activity["columns"]
    assert limited == []


def test_asking_twice_makes_two_runs(owner):
    for _ in range(2):
        api(owner).post("/api/reports/", {"type": "jobs.export", "format": "csv"}, format="json")

    assert ReportRun.objects.count() == 2
    assert Job.objects.filter(task_name="reports.report_generate").count() == 2
