"""The JSON API: 202 on enqueue, status on read, nothing for anonymous."""

import json

import pytest
from django.contrib.auth.models import Permission
from django_celery_results.models import TaskResult
from rest_framework.authtoken.models import Token

from jobs.models import Job, JobStatus
from jobs.services import enqueue

pytestmark = pytest.mark.django_db


def post_job(client, body, **extra):
    return client.post("/api/jobs/", data=json.dumps(body), content_type="application/json", **extra)


@pytest.fixture
def submitter(django_user_model):
    """A non-staff user allowed to enqueue (jobs.add_job) and nothing more."""
    user = django_user_model.objects.create_user("submitter", password="pw-123456")
    user.user_permissions.add(Permission.objects.get(codename="add_job"))
    return user


def test_anonymous_users_can_neither_enqueue_nor_read(client):
    job = enqueue("jobs.noop")
    assert post_job(client, {"task": "jobs.noop"}).status_code in (401, 403)
    assert client.get(f"/api/jobs/{job.id}/").status_code in (401, 403)
    assert client.get("/api/jobs/").status_code in (401, 403)
    assert Job.objects.count() == 1


def test_a_staff_user_enqueues_and_gets_202_with_a_location(admin_client):
    response = post_job(admin_client, {"task": "jobs.sleep", "args": [0.5], "kwargs": {"steps": 2}, "priority": "high"})

    assert response.status_code == 202
    job = Job.objects.get()
    assert response["Location"].endswith(f"/api/jobs/{job.id}/")
    body = response.json()
    assert (body["id"], body["status"], body["priority"]) == (str(job.id), "PENDING", "high")
    assert (job.args, job.kwargs) == ([0.5], {"steps": 2})


def test_a_token_authenticates_without_a_session(client, submitter):
    token = Token.objects.create(user=submitter)
    response = post_job(client, {"task": "jobs.noop"}, HTTP_AUTHORIZATION=f"Token {token.key}")
    assert response.status_code == 202
    assert Job.objects.get().requested_by == submitter


def test_a_user_without_the_add_permission_cannot_enqueue(client, django_user_model):
    user = django_user_model.objects.create_user("reader", password="pw-123456")
    client.force_login(user)
    response = post_job(client, {"task": "jobs.noop"})
    assert response.status_code == 403
    assert "jobs.add_job" in response.json()["detail"]
    assert not Job.objects.exists()


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"task": "os.system"}, "task", "Unknown task 'os.system'"),
        ({"task": "testapp.bad_input", "args": ["x"]}, "task", "Unknown task"),  # not public
        ({"task": "jobs.sleep", "args": [1, 2, 3]}, "args", "too many positional arguments"),
        ({"task": "jobs.sleep", "kwargs": {"nap": 1}}, "args", "unexpected keyword argument 'nap'"),
        ({"task": "jobs.noop", "priority": "urgent"}, "priority", "not a valid choice"),
        ({"task": "jobs.noop", "countdown": -5}, "countdown", "greater than or equal to 0"),
        ({"task": "jobs.noop", "args": "abc"}, "args", "Expected a list"),
    ],
)
def test_bad_requests_get_400_with_a_clear_message_and_enqueue_nothing(admin_client, body, field, words):
    response = post_job(admin_client, body)
    assert response.status_code == 400
    assert words in json.dumps(response.json()[field])
    assert not Job.objects.exists()


def test_malformed_json_gets_400(admin_client):
    response = admin_client.post("/api/jobs/", data="{not json", content_type="application/json")
    assert response.status_code == 400
    assert "JSON parse error" in response.json()["detail"]


def test_an_oversized_body_gets_413(admin_client, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = post_job(admin_client, {"task": "jobs.noop", "args": ["x" * 2000]})
    assert response.status_code == 413
    assert not Job.objects.exists()


def post_bulk(client, body):
    return client.post("/api/jobs/bulk/", data=json.dumps(body), content_type="application/json")


def test_many_jobs_from_one_request_get_one_202_with_their_ids(admin_client, admin_user):
    calls = [{"args": [0.1 * i]} for i in range(3)] + [{"kwargs": {"seconds": 0, "steps": 1}}]
    response = post_bulk(admin_client, {"task": "jobs.sleep", "calls": calls, "priority": "low"})

    assert response.status_code == 202
    body = response.json()
    jobs = {str(job.id): job for job in Job.objects.all()}
    assert (body["task"], body["count"], set(body["ids"])) == ("jobs.sleep", 4, set(jobs))
    stored = [(jobs[id].args, jobs[id].kwargs, jobs[id].priority, jobs[id].requested_by) for id in body["ids"]]
    assert stored == [
        ([0.0], {}, "low", admin_user),
        ([0.1], {}, "low", admin_user),
        ([0.2], {}, "low", admin_user),
        ([], {"seconds": 0, "steps": 1}, "low", admin_user),
    ]


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"task": "os.system", "calls": [{}]}, "task", "Unknown task 'os.system'"),
        (
            {"task": "jobs.sleep", "calls": [{"args": [1]}, {"args": [1, 2, 3]}]},
            "calls",
            "calls[1]: jobs.sleep: too many",
        ),
        ({"task": "jobs.noop", "calls": []}, "calls", "at least 1"),
        ({"task": "jobs.noop", "calls": [{"args": "abc"}]}, "calls", "Expected a list"),
        ({"task": "jobs.noop", "calls": [{}] * 10_001}, "calls", "no more than 10000"),
    ],
)
def test_a_bulk_request_with_one_bad_call_is_refused_whole(admin_client, settings, body, field, words):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = None
    response = post_bulk(admin_client, body)
    assert response.status_code == 400
    assert words in json.dumps(response.json()[field])
    assert not Job.objects.exists()


def test_bulk_enqueueing_needs_the_add_permission(client, django_user_model):
    client.force_login(django_user_model.objects.create_user("reader", password="pw-123456"))
    assert post_bulk(client, {"task": "jobs.noop", "calls": [{}]}).status_code == 403
    assert not Job.objects.exists()


def test_reading_a_job_shows_status_progress_timestamps_attempts_and_result(admin_client):
    job = enqueue("jobs.sleep", 1)
    Job.objects.filter(pk=job.pk).update(status=JobStatus.SUCCESS, attempts=2, progress=100)
    TaskResult.objects.create(
        task_id=str(job.id), status="SUCCESS", result='{"slept": 1}', content_type="application/json"
    )

    body = admin_client.get(f"/api/jobs/{job.id}/").json()

    assert body["status"] == "SUCCESS"
    assert body["attempts"] == 2
    assert body["progress"] == {"percent": 100, "message": ""}
    assert body["result"] == {"slept": 1}
    assert body["created_at"] and body["error"] is None


def test_a_failed_job_shows_its_error_and_staff_see_the_traceback(admin_client):
    job = enqueue("jobs.noop")
    Job.objects.filter(pk=job.pk).update(status=JobStatus.FAILURE, error="RuntimeError: boom")
    TaskResult.objects.create(task_id=str(job.id), status="FAILURE", traceback="Traceback ...\nRuntimeError: boom")

    body = admin_client.get(f"/api/jobs/{job.id}/").json()
    assert (body["status"], body["error"], body["result"]) == ("FAILURE", "RuntimeError: boom", None)
    assert "RuntimeError: boom" in body["traceback"]


def test_users_see_their_own_jobs_and_not_other_peoples(client, submitter, admin_user):
    mine = enqueue("jobs.noop", requested_by=submitter)
    theirs = enqueue("jobs.noop", requested_by=admin_user)
    client.force_login(submitter)

    assert client.get(f"/api/jobs/{mine.id}/").status_code == 200
    assert client.get(f"/api/jobs/{theirs.id}/").status_code == 404
    assert [job["id"] for job in client.get("/api/jobs/").json()["results"]] == [str(mine.id)]


def test_following_ones_own_finished_job_costs_three_queries_and_no_permission_lookup(
    client, submitter, django_user_model, django_assert_num_queries
):
    """What a client polls for: its token, the job and its result. Someone
    else's job still needs jobs.view_job, and without it is a 404."""
    mine = enqueue("jobs.noop", requested_by=submitter)
    Job.objects.filter(pk=mine.pk).update(status=JobStatus.SUCCESS)
    TaskResult.objects.create(task_id=str(mine.id), status="SUCCESS", result="42")
    token = Token.objects.create(user=submitter)
    with django_assert_num_queries(3):
        body = client.get(f"/api/jobs/{mine.id}/", HTTP_AUTHORIZATION=f"Token {token.key}").json()
    assert (body["status"], body["result"]) == ("SUCCESS", 42)

    viewer = django_user_model.objects.create_user("viewer", password="pw-123456")
    viewer_token = Token.objects.create(user=viewer)
    as_viewer = {"HTTP_AUTHORIZATION": f"Token {viewer_token.key}"}
    assert client.get(f"/api/jobs/{mine.id}/", **as_viewer).status_code == 404
    viewer.user_permissions.add(Permission.objects.get(codename="view_job"))
    assert client.get(f"/api/jobs/{mine.id}/", **as_viewer).json()["result"] == 42


def test_the_list_filters_by_status_and_refuses_unknown_ones(admin_client):
    done = enqueue("jobs.noop")
    Job.objects.filter(pk=done.pk).update(status=JobStatus.SUCCESS)
    enqueue("jobs.noop")

    assert [j["id"] for j in admin_client.get("/api/jobs/?status=SUCCESS").json()["results"]] == [str(done.id)]
    assert admin_client.get("/api/jobs/?status=NOPE").status_code == 400


def test_the_task_catalogue_lists_public_tasks_only(admin_client):
    names = [task["name"] for task in admin_client.get("/api/jobs/tasks/").json()["tasks"]]
    assert "jobs.sleep" in names and "jobs.noop" in names
    assert "testapp.bad_input" not in names
