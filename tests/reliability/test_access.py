"""Who gets job data, across every door to it: the API, the admin, Flower,
/metrics and report downloads. Anonymous users and users who are not staff
get nothing; a staff user without jobs.retry_job cannot retry. (Each app
tests its own door in tests/*/test_api.py, tests/jobs/test_admin.py,
tests/ops/test_metrics.py and tests/ops/test_flower_on_rabbitmq.py; here
the same secret, one job's id and its error text, is looked for behind
all of them at once.)"""

import os
import urllib.error
import urllib.request

import pytest
from django.conf import settings
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission, User
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from jobs.models import Job, JobStatus
from reports import services as report_services
from tests.ops.conftest import FLOWER_LOGIN, FlowerProcess
from tests.ops.http import http_get

SECRET = "customer 4711 card declined"


def make_user(username: str, *perms: str, **flags) -> User:
    user = User.objects.create_user(username, f"{username}@example.com", "pw-123456", **flags)
    for perm in perms:
        app_label, codename = perm.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    return User.objects.get(pk=user.pk)


def logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def secret_job(db) -> Job:
    owner = make_user("owner", "jobs.add_job")
    return Job.objects.create(
        task_name="testapp.fail_with",
        queue="default",
        args=[SECRET],
        status=JobStatus.FAILURE,
        error=f"RuntimeError: {SECRET}",
        requested_by=owner,
    )


@pytest.fixture
def outsiders(db) -> dict[str, Client]:
    """Everyone who must see nothing: nobody, a plain user, and a plain user
    who holds every job permission but is not staff."""
    plain = make_user("plain")
    holder = make_user("holder", "jobs.view_job", "jobs.retry_job", "jobs.change_job")
    return {"anonymous": Client(), "plain user": logged_in(plain), "non-staff with job perms": logged_in(holder)}


def leaks(response, job: Job) -> bool:
    body = b"".join(response.streaming_content) if response.streaming else response.content
    return SECRET.encode() in body or str(job.id).encode() in body


@pytest.mark.django_db
def test_anonymous_users_get_no_job_data_from_the_api_or_the_admin_or_metrics(secret_job, outsiders):
    client = outsiders["anonymous"]
    for url in [
        "/api/jobs/",
        f"/api/jobs/{secret_job.id}/",
        "/api/jobs/tasks/",
        "/api/reports/",
        "/api/images/",
        "/admin/jobs/job/",
        f"/admin/jobs/job/{secret_job.id}/change/",
        "/admin/ops/dashboard/",
        "/metrics",
    ]:
        response = client.get(url)
        assert response.status_code in (302, 401, 403), (url, response.status_code)
        if response.status_code == 302:
            assert response["Location"].startswith("/admin/login/"), url
        assert not leaks(response, secret_job), url


@pytest.mark.django_db
def test_users_who_are_not_staff_get_no_one_elses_job_from_the_api_and_nothing_from_the_admin_or_metrics(
    secret_job, outsiders
):
    for who in ("plain user", "non-staff with job perms"):
        client = outsiders[who]
        listing = client.get("/api/jobs/")
        if who == "plain user":
            assert listing.status_code == 200 and listing.json()["results"] == [], who
            assert client.get(f"/api/jobs/{secret_job.id}/").status_code == 404, who
        for url in ["/admin/", "/admin/jobs/job/", f"/admin/jobs/job/{secret_job.id}/change/", "/admin/ops/dashboard/"]:
            response = client.get(url)
            assert response.status_code == 302 and response["Location"].startswith("/admin/login/"), (who, url)
        metrics = client.get("/metrics")
        assert metrics.status_code == 401, who
        assert not leaks(metrics, secret_job), who


@pytest.mark.django_db
def test_an_api_token_of_a_plain_user_reads_no_one_elses_job(secret_job):
    token = Token.objects.create(user=make_user("scripted"))
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    assert client.get(f"/api/jobs/{secret_job.id}/").status_code == 404
    assert not leaks(client.get("/api/jobs/?status=FAILURE"), secret_job)
    assert client.post("/api/jobs/", {"task": "jobs.noop"}, format="json").status_code == 403
    assert Job.objects.count() == 1


@pytest.fixture
def ready_report(db, settings, tmp_path):
    settings.REPORTS_ROOT = tmp_path / "reports"
    settings.REPORTS_STORAGE = ""
    settings.REPORTS_ROOT.mkdir()
    owner = make_user("analyst", "reports.add_reportrun", "jobs.view_job")
    Job.objects.create(task_name="shop.invoice_render", queue="default", error=SECRET, status=JobStatus.FAILURE)
    run = report_services.report_request(report_type="jobs.export", format="csv", owner=owner)
    report_services.report_generate(run=run)
    run.refresh_from_db()
    return owner, run


@pytest.mark.django_db
def test_report_downloads_go_to_their_owner_only(ready_report, outsiders):
    owner, run = ready_report
    url = f"/api/reports/{run.id}/download/"
    mine = logged_in(owner).get(url)
    assert mine.status_code == 200 and SECRET.encode() in b"".join(mine.streaming_content)  # the control

    staff_without_view = logged_in(make_user("staffer", is_staff=True))
    for who, client in [*outsiders.items(), ("staff without reports.view_reportrun", staff_without_view)]:
        for path in (url, f"/api/reports/{run.id}/"):
            response = client.get(path)
            assert response.status_code in (401, 403, 404), (who, path, response.status_code)
            body = b"".join(response.streaming_content) if response.streaming else response.content
            assert SECRET.encode() not in body, (who, path)


@pytest.mark.django_db
def test_a_staff_user_without_the_retry_permission_can_neither_post_the_retry_url_nor_run_the_action(secret_job):
    viewer = make_user("viewer", "jobs.view_job", "jobs.change_job", is_staff=True)
    client = logged_in(viewer)
    assert client.get(f"/admin/jobs/job/{secret_job.id}/change/").status_code == 200  # can look

    assert client.post(f"/admin/jobs/job/{secret_job.id}/retry/").status_code == 403
    assert client.post("/admin/jobs/job/retry-failed/").status_code == 403
    action = client.post("/admin/jobs/job/", {"action": "retry_selected", "_selected_action": [str(secret_job.id)]})
    assert action.status_code in (200, 302)  # Django answers "no action selected", runs nothing
    assert Job.objects.count() == 1 and not LogEntry.objects.exists()

    # The control: the same user with the permission retries.
    viewer.user_permissions.add(Permission.objects.get(codename="retry_job"))
    client = logged_in(User.objects.get(pk=viewer.pk))
    assert client.post(f"/admin/jobs/job/{secret_job.id}/retry/").status_code == 302
    assert Job.objects.filter(retry_of=secret_job).count() == 1


@pytest.fixture(scope="module")
def flower(rabbitmq_vhost, tmp_path_factory):
    var_dir = tmp_path_factory.mktemp("flower-var")
    env = {name: value for name, value in os.environ.items() if name != "FLOWER_BROKER_API"}
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings.test",
        CELERY_BROKER_URL=settings.CELERY_BROKER_URL,
        FLOWER_BASIC_AUTH=":".join(FLOWER_LOGIN),
        KIT_VAR_DIR=str(var_dir),
        PYTHONUNBUFFERED="1",
    )
    process = FlowerProcess(env, var_dir / "flower.log").start()
    yield process
    process.stop()


@pytest.mark.integration
@pytest.mark.django_db
def test_flower_answers_no_one_without_its_own_login_not_even_a_django_superuser_token(flower):
    token = Token.objects.create(user=User.objects.create_superuser("root", "root@example.com", "pw"))
    for path in ("/", "/tasks", "/api/tasks", "/api/workers", "/api/task/info/00000000-0000-0000-0000-000000000000"):
        assert http_get(flower.url + path)[0] == 401, path
        assert http_get(flower.url + path, login=("admin", "pw-123456"))[0] == 401, path
        request = urllib.request.Request(flower.url + path, headers={"Authorization": f"Token {token.key}"})
        try:
            status = urllib.request.urlopen(request, timeout=10).status
        except urllib.error.HTTPError as error:
            status = error.code
        assert status == 401, path
    assert http_get(flower.url + "/api/tasks", login=FLOWER_LOGIN)[0] == 200  # the control
