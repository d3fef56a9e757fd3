"""The Job admin on PostgreSQL, without a worker: the list, search, the
detail page, and retry and cancel with their permissions and log entries.

Tests run inside a transaction that never commits, so nothing a retry
creates is published to the broker.
"""

from datetime import timedelta

import pytest
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth.models import Permission
from django.urls import reverse
from django.utils import timezone
from django_celery_results.models import TaskResult

from jobs.admin import TaskNameFilter
from jobs.models import Job, JobStatus
from jobs.services import enqueue

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:jobs_job_changelist")
RETRY_FAILED = reverse("admin:jobs_job_retry_failed")


def make_job(task_name="testapp.fail_with", *args, status=JobStatus.QUEUED, **kwargs) -> Job:
    """A job created by the service, then moved to `status` as a worker would."""
    job = enqueue(task_name, *args, **kwargs)
    Job.objects.filter(pk=job.pk).update(status=status)
    job.refresh_from_db()
    return job


def change_url(job: Job) -> str:
    return reverse("admin:jobs_job_change", args=[job.pk])


def listed(response) -> set:
    return {job.pk for job in response.context["cl"].result_list}


def run_action(client, action: str, *jobs: Job, follow=True, **extra):
    data = {"action": action, "_selected_action": [str(job.pk) for job in jobs], **extra}
    return client.post(CHANGELIST, data, follow=follow)


def staff_with(django_user_model, *codenames: str):
    user = django_user_model.objects.create_user("operator", password="pw-123456", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="jobs", codename__in=codenames))
    return user


def offered_actions(response) -> list[str]:
    form = response.context["action_form"]  # None when no action is allowed
    return [name for name, _ in form.fields["action"].choices] if form else []


def shown_messages(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


# -- The list ---------------------------------------------------------------


def test_the_job_list_shows_status_attempts_progress_and_runtime(admin_client):
    job = make_job("jobs.sleep", 1, status=JobStatus.SUCCESS)
    Job.objects.filter(pk=job.pk).update(attempts=2, progress=100)

    response = admin_client.get(CHANGELIST)

    assert response.status_code == 200
    html = response.content.decode()
    assert str(job.pk)[:8] in html
    assert 'class="job-status"' in html and ">SUCCESS</span>" in html
    assert "100 %" in html
    assert "Add job" not in html  # jobs are only created by the services


def test_the_job_list_shows_only_jobs_matching_the_filters(admin_client):
    wanted = make_job("testapp.fail_with", "x", status=JobStatus.FAILURE, priority="high")
    make_job("testapp.fail_with", "x", status=JobStatus.SUCCESS, priority="high")
    make_job("jobs.noop", status=JobStatus.FAILURE, priority="high")
    make_job("testapp.fail_with", "x", status=JobStatus.FAILURE, priority="low")

    response = admin_client.get(
        CHANGELIST,
        {
            "status__exact": "FAILURE",
            "task_name": "testapp.fail_with",
            "priority__exact": "high",
            "created_at__gte": str(timezone.now() - timedelta(hours=1)),
        },
    )

    assert response.status_code == 200
    assert listed(response) == {wanted.pk}


def test_the_task_filter_offers_the_registered_tasks(admin_client):
    response = admin_client.get(CHANGELIST)

    task_filter = next(spec for spec in response.context["cl"].filter_specs if isinstance(spec, TaskNameFilter))
    offered = [value for value, _ in task_filter.lookup_choices]
    assert "testapp.fail_unless_file" in offered and "jobs.noop" in offered


def test_the_list_costs_the_same_few_queries_for_one_job_or_fifty(
    admin_client, admin_user, django_assert_max_num_queries
):
    make_job("jobs.noop", requested_by=admin_user)
    with django_assert_max_num_queries(20) as one:
        admin_client.get(CHANGELIST)
    for _ in range(49):
        make_job("jobs.noop", requested_by=admin_user)
    with django_assert_max_num_queries(len(one.captured_queries)) as fifty:
        response = admin_client.get(CHANGELIST)

    assert len(listed(response)) == 50
    assert len(fifty.captured_queries) == len(one.captured_queries)


def test_searching_a_whole_id_finds_that_job(admin_client):
    job = make_job("jobs.noop")
    make_job("jobs.noop")

    response = admin_client.get(CHANGELIST, {"q": f" {job.pk} "})

    assert listed(response) == {job.pk}


def test_searching_the_first_characters_of_an_id_finds_that_job(admin_client):
    job = make_job("jobs.noop")
    others = [make_job("jobs.noop") for _ in range(3)]
    prefix = str(job.pk)[:8]
    assert not any(str(other.pk).startswith(prefix) for other in others)

    response = admin_client.get(CHANGELIST, {"q": prefix})

    assert listed(response) == {job.pk}


def test_searching_part_of_a_task_name_finds_its_jobs(admin_client):
    wanted = make_job("testapp.fail_unless_file", "/tmp/x")
    make_job("jobs.noop")

    response = admin_client.get(CHANGELIST, {"q": "unless"})

    assert listed(response) == {wanted.pk}


# -- The detail page ---------------------------------------------------------


def test_the_detail_page_shows_the_arguments_result_and_traceback(admin_client):
    job = make_job("testapp.fail_with", "the disk is on fire", status=JobStatus.FAILURE)
    Job.objects.filter(pk=job.pk).update(progress=40, progress_message="halfway there")
    result = TaskResult.objects.create(
        task_id=str(job.pk),
        status="FAILURE",
        result='{"exc_type": "RuntimeError", "exc_message": ["the disk is on fire"]}',
        traceback='Traceback (most recent call last):\n  File "tasks.py", line 3\nRuntimeError: the disk is on fire',
    )

    response = admin_client.get(change_url(job))

    assert response.status_code == 200
    html = response.content.decode()
    assert '<pre class="job-json">[\n  &quot;the disk is on fire&quot;\n]</pre>' in html
    assert '<pre class="job-json">{}</pre>' in html  # the kwargs
    assert "&quot;exc_type&quot;: &quot;RuntimeError&quot;" in html
    assert "File &quot;tasks.py&quot;, line 3\nRuntimeError: the disk is on fire</pre>" in html
    assert reverse("admin:django_celery_results_taskresult_change", args=[result.pk]) in html
    assert '<progress class="job-progress" value="40" max="100"' in html and "halfway there" in html


def test_the_detail_page_is_read_only_even_for_a_superuser(admin_client):
    job = make_job("jobs.noop")

    response = admin_client.get(change_url(job))

    assert response.context["has_change_permission"] is False
    assert 'name="_save"' not in response.content.decode()
    assert admin_client.post(change_url(job), {"task_name": "os.system"}).status_code == 403
    assert Job.objects.get(pk=job.pk).task_name == "jobs.noop"


def test_the_detail_page_links_the_whole_retry_history(admin_client):
    original = make_job("testapp.fail_with", "x", status=JobStatus.FAILURE)
    first_retry = make_job("testapp.fail_with", "x", status=JobStatus.FAILURE)
    second_retry = make_job("testapp.fail_with", "x", status=JobStatus.SUCCESS)
    Job.objects.filter(pk=first_retry.pk).update(retry_of=original)
    Job.objects.filter(pk=second_retry.pk).update(retry_of=first_retry)

    html = admin_client.get(change_url(first_retry)).content.decode()

    history = html[html.index('class="job-retry-history"') :]
    assert (
        history.index(change_url(original))
        < history.index(str(first_retry.pk)[:8])
        < history.index(change_url(second_retry))
    )
    assert ">SUCCESS</span> retry of this job" in history


def test_a_job_that_has_not_run_shows_no_result_yet(admin_client):
    job = make_job("jobs.noop")

    html = admin_client.get(change_url(job)).content.decode()

    assert "None yet: the job has not finished." in html
    assert "None: this job is not a retry and was not retried." in html


# -- Retry -------------------------------------------------------------------


def test_the_retry_action_creates_a_new_job_replaying_the_arguments_and_logs_it(admin_client, admin_user):
    failed = make_job("jobs.sleep", 2, steps=4, priority="low", status=JobStatus.FAILURE)

    response = run_action(admin_client, "retry_selected", failed)

    retried = Job.objects.get(retry_of=failed)
    assert (retried.task_name, retried.args, retried.kwargs) == ("jobs.sleep", [2], {"steps": 4})
    assert retried.priority == "low"
    assert (retried.status, retried.requested_by) == (JobStatus.PENDING, admin_user)
    entry = LogEntry.objects.get(object_id=str(failed.pk))
    assert (entry.user, entry.action_flag) == (admin_user, CHANGE)
    assert entry.change_message == f"Retried as job {retried.pk}."
    assert "Retried 1 job." in shown_messages(response)


def test_the_retry_action_skips_jobs_that_cannot_be_retried_and_says_why(admin_client):
    failed = make_job(status=JobStatus.FAILURE)
    succeeded = make_job(status=JobStatus.SUCCESS)
    running = make_job(status=JobStatus.STARTED)

    response = run_action(admin_client, "retry_selected", failed, succeeded, running)

    assert Job.objects.filter(retry_of__isnull=False).count() == 1
    assert LogEntry.objects.count() == 1
    warning = next(text for text in shown_messages(response) if text.startswith("Skipped"))
    assert warning.startswith("Skipped 2 jobs: only failed, cancelled, dead or lost jobs can be retried")
    assert "1 because it was SUCCESS" in warning and "1 because it was STARTED" in warning


def test_the_retry_button_retries_that_job_and_opens_the_new_one(admin_client):
    dead = make_job(status=JobStatus.DEAD)

    page = admin_client.get(change_url(dead)).content.decode()
    response = admin_client.post(reverse("admin:jobs_job_retry", args=[dead.pk]))

    assert reverse("admin:jobs_job_retry", args=[dead.pk]) in page
    retried = Job.objects.get(retry_of=dead)
    assert response.status_code == 302 and response["Location"] == change_url(retried)
    assert LogEntry.objects.get(object_id=str(dead.pk)).change_message == f"Retried as job {retried.pk}."


def test_the_retry_button_is_only_offered_for_jobs_that_ended_badly(admin_client):
    running = make_job(status=JobStatus.STARTED)

    page = admin_client.get(change_url(running)).content.decode()

    assert reverse("admin:jobs_job_retry", args=[running.pk]) not in page
    assert reverse("admin:jobs_job_cancel", args=[running.pk]) in page


def test_the_retry_url_only_accepts_post(admin_client):
    failed = make_job(status=JobStatus.FAILURE)

    assert admin_client.get(reverse("admin:jobs_job_retry", args=[failed.pk])).status_code == 405
    assert not Job.objects.filter(retry_of=failed).exists()


def test_a_staff_user_without_the_retry_permission_cannot_retry(client, django_user_model):
    client.force_login(staff_with(django_user_model, "view_job"))
    failed = make_job(status=JobStatus.FAILURE)

    changelist = client.get(CHANGELIST)
    page = client.get(change_url(failed)).content.decode()

    assert changelist.status_code == 200
    assert "retry_selected" not in offered_actions(changelist)
    assert RETRY_FAILED not in changelist.content.decode()
    assert reverse("admin:jobs_job_retry", args=[failed.pk]) not in page
    assert client.post(reverse("admin:jobs_job_retry", args=[failed.pk])).status_code == 403
    assert client.post(RETRY_FAILED).status_code == 403
    run_action(client, "retry_selected", failed)
    assert not Job.objects.filter(retry_of=failed).exists()
    assert not LogEntry.objects.exists()


def test_a_staff_user_with_the_retry_permission_can_retry(client, django_user_model):
    operator = staff_with(django_user_model, "view_job", "retry_job")
    client.force_login(operator)
    failed = make_job(status=JobStatus.FAILURE)

    changelist = client.get(CHANGELIST)
    response = client.post(reverse("admin:jobs_job_retry", args=[failed.pk]))

    assert "retry_selected" in offered_actions(changelist) and RETRY_FAILED in changelist.content.decode()
    assert response.status_code == 302
    assert Job.objects.get(retry_of=failed).requested_by == operator


def test_retry_all_failed_matching_the_filter_retries_only_those_jobs(admin_client):
    matching = [make_job("testapp.fail_with", "x", status=status) for status in (JobStatus.FAILURE, JobStatus.DEAD)]
    other_task = make_job("jobs.noop", status=JobStatus.FAILURE)
    succeeded = make_job("testapp.fail_with", "x", status=JobStatus.SUCCESS)
    cancelled = make_job("testapp.fail_with", "x", status=JobStatus.REVOKED)
    already_retried = make_job("testapp.fail_with", "x", status=JobStatus.FAILURE)
    admin_client.post(reverse("admin:jobs_job_retry", args=[already_retried.pk]))
    before = set(Job.objects.values_list("pk", flat=True))

    confirmation = admin_client.get(RETRY_FAILED, {"task_name": "testapp.fail_with", "p": "1"})
    response = admin_client.post(f"{RETRY_FAILED}?task_name=testapp.fail_with")

    assert '<strong class="job-retry-count">2</strong>' in confirmation.content.decode()
    assert "Task: testapp.fail_with" in confirmation.content.decode()
    new_jobs = Job.objects.exclude(pk__in=before)
    assert {job.retry_of_id for job in new_jobs} == {job.pk for job in matching}
    for untouched in (other_task, succeeded, cancelled, already_retried):
        assert not new_jobs.filter(retry_of=untouched).exists()
    assert response.status_code == 302 and response["Location"] == f"{CHANGELIST}?task_name=testapp.fail_with"
    assert LogEntry.objects.filter(object_id__in=[str(job.pk) for job in matching]).count() == 2


def test_the_changelist_links_retry_all_failed_with_its_current_filter(admin_client):
    response = admin_client.get(CHANGELIST, {"status__exact": "FAILURE"})

    assert f'href="{RETRY_FAILED}?status__exact=FAILURE"' in response.content.decode()


# -- Cancel ------------------------------------------------------------------


def test_the_cancel_action_marks_a_queued_job_revoked_and_logs_it(admin_client, admin_user):
    queued = make_job("jobs.noop", status=JobStatus.QUEUED)

    response = run_action(admin_client, "cancel_selected", queued, confirmed="yes")

    queued.refresh_from_db()
    assert (queued.status, queued.error) == (JobStatus.REVOKED, "Cancelled.")
    entry = LogEntry.objects.get(object_id=str(queued.pk))
    assert (entry.user, entry.change_message) == (admin_user, "Cancelled.")
    assert "Cancelled 1 job." in shown_messages(response)


def test_the_cancel_action_leaves_finished_jobs_alone_and_says_why(admin_client):
    done = make_job("jobs.noop", status=JobStatus.SUCCESS)

    response = run_action(admin_client, "cancel_selected", done, confirmed="yes")

    assert Job.objects.get(pk=done.pk).status == JobStatus.SUCCESS
    assert not LogEntry.objects.exists()
    assert shown_messages(response) == [
        "Skipped 1 job: only jobs that have not finished can be cancelled (1 because it had already ended (SUCCESS))."
    ]


def test_the_cancel_button_cancels_that_job(admin_client):
    pending = make_job("jobs.noop", status=JobStatus.PENDING)

    response = admin_client.post(reverse("admin:jobs_job_cancel", args=[pending.pk]))

    assert response.status_code == 302 and response["Location"] == change_url(pending)
    assert Job.objects.get(pk=pending.pk).status == JobStatus.REVOKED
    assert LogEntry.objects.get(object_id=str(pending.pk)).change_message == "Cancelled."


def test_a_staff_user_without_the_cancel_permission_cannot_cancel(client, django_user_model):
    client.force_login(staff_with(django_user_model, "view_job", "retry_job"))
    queued = make_job("jobs.noop", status=JobStatus.QUEUED)

    changelist = client.get(CHANGELIST)

    assert "retry_selected" in offered_actions(changelist)
    assert "cancel_selected" not in offered_actions(changelist)
    assert client.post(reverse("admin:jobs_job_cancel", args=[queued.pk])).status_code == 403
    run_action(client, "cancel_selected", queued, confirmed="yes")
    assert Job.objects.get(pk=queued.pk).status == JobStatus.QUEUED


# -- Delete ------------------------------------------------------------------


def test_an_active_job_cannot_be_deleted_but_a_finished_one_can(admin_client):
    queued = make_job("jobs.noop", status=JobStatus.QUEUED)
    done = make_job("jobs.noop", status=JobStatus.SUCCESS)

    assert admin_client.post(reverse("admin:jobs_job_delete", args=[queued.pk]), {"post": "yes"}).status_code == 403
    admin_client.post(reverse("admin:jobs_job_delete", args=[done.pk]), {"post": "yes"})

    assert set(Job.objects.values_list("pk", flat=True)) == {queued.pk}
