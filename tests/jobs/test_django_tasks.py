"""Django's Tasks API on the kit's backend, without a worker: the mapping of
`.enqueue()` onto a Job, validation, and get_result of jobs that have not
run. (tests/jobs/test_django_tasks_on_rabbitmq.py runs them.)"""

from datetime import timedelta

import pytest
from django.db import transaction
from django.test import override_settings
from django.utils import timezone

from jobs.base_task import JobTask
from jobs.django_tasks import InvalidTask, KitBackend, TaskResultDoesNotExist, kit_priority
from jobs.models import Job, JobStatus
from jobs.queues import Priority
from jobs.registry import get_job_task
from jobs.services import enqueue
from tests.testapp import tasks

try:
    from django.tasks import TaskResultStatus, task, task_backends
except ImportError:
    from django_tasks import TaskResultStatus, task, task_backends

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("django_priority", "level"),
    [(-100, Priority.LOW), (-1, Priority.LOW), (0, Priority.MEDIUM), (1, Priority.HIGH), (100, Priority.HIGH)],
)
def test_priority_cut_points_sit_at_the_default(django_priority, level):
    assert kit_priority(django_priority) is level
    job = Job.objects.get(pk=tasks.dj_record.using(priority=django_priority).enqueue("/dev/null", "x").id)
    assert job.priority == level.value


def test_enqueue_stores_the_module_path_the_queue_and_canonical_arguments():
    result = tasks.dj_add.enqueue(2, b=3)

    job = Job.objects.get(pk=result.id)
    assert job.task_name == "tests.testapp.tasks.dj_add" == tasks.dj_add.module_path
    assert (job.args, job.kwargs) == ([2], {"b": 3})
    assert (job.queue, job.priority) == ("email", "low")  # @task(queue_name="email", priority=-20)
    assert isinstance(get_job_task(job.task_name), JobTask)  # what the workers run
    assert result.status == TaskResultStatus.READY
    assert result.enqueued_at == job.created_at
    assert (result.attempts, result.worker_ids, result.errors) == (0, [], [])


def test_the_flags_tell_what_the_backend_does():
    backend = task_backends["default"]
    assert isinstance(backend, KitBackend)
    assert (
        backend.supports_defer,
        backend.supports_async_task,
        backend.supports_get_result,
        backend.supports_priority,
    ) == (True, True, True, True)
    assert backend.queues == {"default", "email", "images", "reports"}


def test_an_unknown_queue_is_an_error_at_enqueue_and_no_job_exists():
    with pytest.raises(InvalidTask, match="Queue 'nowhere' is not valid"):
        tasks.dj_record.using(queue_name="nowhere").enqueue("/dev/null", "x")
    assert not Job.objects.exists()


def test_queues_configured_outside_the_kit_are_refused_at_start():
    with pytest.raises(Exception, match=r"\['mailq'\], which are not kit queues"):
        KitBackend("default", {"QUEUES": ["default", "mailq"]})


def test_arguments_that_are_not_json_get_djangos_error_and_no_job():
    with pytest.raises(TypeError, match="Unsupported type"):
        tasks.dj_record.enqueue("/dev/null", object())
    assert not Job.objects.exists()


def test_functions_that_are_not_module_level_are_refused_by_django():
    def nested(): ...

    with pytest.raises(InvalidTask, match="module level"):
        task(nested)


def test_a_task_workers_would_not_import_is_refused_at_enqueue():
    # Defined here, in a test module: no worker imports it at start, so its
    # jobs would fail NotRegistered. Refused before a job exists.
    with pytest.raises(InvalidTask, match="workers do not import"):
        module_level_task.enqueue()
    assert not Job.objects.exists()


def _not_imported_by_workers() -> None: ...


module_level_task = task(_not_imported_by_workers)


def test_run_after_becomes_the_eta_and_a_far_one_waits_in_the_database(django_capture_on_commit_callbacks):
    later = timezone.now() + timedelta(hours=2)
    with django_capture_on_commit_callbacks(execute=True):
        result = tasks.dj_record.using(run_after=later).enqueue("/dev/null", "x")

    job = Job.objects.get(pk=result.id)
    assert job.eta == later
    # Beyond JOBS_BROKER_ETA_HORIZON_SECONDS: not on the broker, the relay
    # publishes it when it comes near.
    assert job.status == JobStatus.PENDING
    assert tasks.dj_record.get_result(result.id).task.run_after == later


def test_naive_run_after_is_refused_by_django():
    with pytest.raises(InvalidTask, match="aware datetime"):
        tasks.dj_record.using(run_after=timezone.now().replace(tzinfo=None))


def test_a_rolled_back_enqueue_leaves_no_job_and_publishes_nothing(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks, pytest.raises(RuntimeError):
        with transaction.atomic():
            tasks.dj_record.enqueue("/dev/null", "x")
            raise RuntimeError("the caller's work failed")
    assert callbacks == []
    assert not Job.objects.exists()


def test_get_result_of_unknown_ids_and_of_jobs_that_are_not_django_tasks():
    backend = task_backends["default"]
    with pytest.raises(TaskResultDoesNotExist):
        backend.get_result("not-a-uuid")
    with pytest.raises(TaskResultDoesNotExist):
        backend.get_result("7b0f5c4e-8d2a-4f7e-9a51-1c7f8d7b2e10")
    celery_job = enqueue("jobs.noop")
    with pytest.raises(TaskResultDoesNotExist, match="not a Django task"):
        backend.get_result(str(celery_job.id))


@pytest.mark.parametrize(
    ("job_status", "django_status", "error_class"),
    [
        (JobStatus.QUEUED, TaskResultStatus.READY, None),
        (JobStatus.RETRYING, TaskResultStatus.READY, None),
        (JobStatus.STARTED, TaskResultStatus.RUNNING, None),
        (JobStatus.REVOKED, TaskResultStatus.FAILED, "jobs.django_tasks.JobCancelled"),
        (JobStatus.DEAD, TaskResultStatus.FAILED, "jobs.django_tasks.JobDead"),
        (JobStatus.LOST, TaskResultStatus.FAILED, "jobs.django_tasks.JobLost"),
    ],
)
def test_job_states_map_onto_djangos(job_status, django_status, error_class):
    result = tasks.dj_record.enqueue("/dev/null", "x")
    Job.objects.filter(pk=result.id).update(status=job_status, error="why it ended", attempts=3, worker="w1@host")

    result.refresh()

    assert result.status == django_status
    assert (result.attempts, result.worker_ids, result.job_status) == (3, ["w1@host"], job_status)
    assert [error.exception_class_path for error in result.errors] == ([error_class] if error_class else [])
    if error_class:
        assert result.errors[0].exception_class.__name__ in error_class
        assert result.errors[0].traceback == "why it ended"


@override_settings(TASKS={"default": {"BACKEND": "jobs.django_tasks.KitBackend", "QUEUES": ["default"]}})
def test_queues_can_be_narrowed_to_some_kit_queues():
    with pytest.raises(InvalidTask, match="Queue 'email' is not valid"):
        tasks.dj_record.using(queue_name="email").enqueue("/dev/null", "x")


def test_the_kits_own_enqueue_reaches_django_tasks_by_module_path():
    # What Django's API has no words for (bulk enqueue, unique keys) works
    # on a Django task through jobs.services, by its module path.
    from jobs.services import job_enqueue, job_enqueue_many

    jobs = job_enqueue_many(task_name=tasks.dj_add.module_path, calls=[((1, 2), {}), ((3, 4), {})])
    keyed = job_enqueue(task_name=tasks.dj_add.module_path, args=[5, 6], unique_key="add-5-6")
    again = job_enqueue(task_name=tasks.dj_add.module_path, args=[5, 6], unique_key="add-5-6")

    assert again.pk == keyed.pk
    assert [job.queue for job in jobs] == ["email", "email"]
    result = tasks.dj_add.get_result(str(jobs[1].pk))
    assert (result.args, result.status) == ([3, 4], TaskResultStatus.READY)


def test_the_async_lookups_read_the_same_result():
    from asgiref.sync import async_to_sync

    result = tasks.dj_record.enqueue("/dev/null", "x")
    Job.objects.filter(pk=result.id).update(status=JobStatus.STARTED, attempts=1, worker="w1@host")

    fetched = async_to_sync(tasks.dj_record.aget_result)(result.id)
    async_to_sync(result.arefresh)()

    assert fetched.status == result.status == TaskResultStatus.RUNNING
    assert fetched.attempts == result.attempts == 1


def test_a_django_task_is_a_job_like_any_other_in_the_api_the_admin_and_the_metrics(admin_client):
    result = tasks.dj_add.enqueue(1, 2)
    path = tasks.dj_add.module_path

    detail = admin_client.get(f"/api/jobs/{result.id}/")
    changelist = admin_client.get("/admin/jobs/job/", {"task_name": path})
    metrics = admin_client.get("/metrics").content.decode()

    assert (detail.status_code, detail.json()["task"], detail.json()["status"]) == (200, path, "PENDING")
    assert [job.pk for job in changelist.context["cl"].result_list] == [Job.objects.get(pk=result.id).pk]
    assert f'task="{path}"' in metrics


def test_djangos_task_enqueued_signal_is_sent_with_the_result():
    try:
        from django.tasks.signals import task_enqueued
    except ImportError:
        from django_tasks.signals import task_enqueued
    received = []

    def receiver(sender, task_result, **kwargs):
        received.append((sender, task_result))

    task_enqueued.connect(receiver)
    try:
        result = tasks.dj_record.enqueue("/dev/null", "x")
    finally:
        task_enqueued.disconnect(receiver)

    assert received == [(KitBackend, result)]
