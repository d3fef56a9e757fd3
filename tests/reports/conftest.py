"""Fixtures for the report tests: a REPORTS_ROOT (and MEDIA_ROOT, where
the mail module keeps attachments) of the test's own that worker processes
share, users with and without the rights to ask and to look, and job rows
with known timings to report on."""

from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from django.contrib.auth.models import Permission, User
from rest_framework.test import APIClient

from jobs.models import Job, JobStatus
from reports import services
from reports.models import ReportRun

UTC = ZoneInfo("UTC")


@pytest.fixture(autouse=True)
def reports_root(settings, tmp_path) -> Path:
    root = tmp_path / "reports"
    root.mkdir()
    settings.REPORTS_ROOT = root
    settings.REPORTS_STORAGE = ""
    settings.MEDIA_ROOT = str(tmp_path / "media")
    return root


@pytest.fixture
def worker_env(worker_env, reports_root) -> dict:
    """Workers write where the test reads."""
    return {**worker_env, "REPORTS_ROOT": str(reports_root), "DJANGO_MEDIA_ROOT": str(reports_root.parent / "media")}


def make_user(username: str, *perms: str, **flags) -> User:
    user = User.objects.create_user(username, f"{username}@example.com", "pw", **flags)
    for perm in perms:
        app_label, codename = perm.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    return User.objects.get(pk=user.pk)  # a fresh instance: no stale permission cache


ASKER_PERMS = ("reports.add_reportrun", "jobs.view_job")


@pytest.fixture
def owner(db) -> User:
    return make_user("olivia", *ASKER_PERMS)


@pytest.fixture
def stranger(db) -> User:
    return make_user("sam", *ASKER_PERMS)


@pytest.fixture
def staff(db) -> User:
    return make_user("stella", "reports.view_reportrun", is_staff=True)


def api(user: User | None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_authenticate(user)
    return client


def make_job(
    task: str = "shop.invoice_render",
    *,
    queue: str = "default",
    status: str = JobStatus.SUCCESS,
    created: datetime | None = None,
    wait: float | None = 1.0,
    runtime: float | None = 2.0,
    error: str = "",
    attempts: int = 1,
) -> Job:
    """A job row as a worker would have left it: created, queued, started
    `wait` seconds later, finished `runtime` seconds after that."""
    created = created or datetime.now(UTC) - timedelta(minutes=5)
    started = created + timedelta(seconds=wait) if wait is not None else None
    finished = started + timedelta(seconds=runtime) if started and runtime is not None else None
    job = Job.objects.create(
        task_name=task,
        queue=queue,
        status=status,
        queued_at=created,
        started_at=started,
        finished_at=finished,
        error=error,
        attempts=attempts,
    )
    # created_at is auto_now_add: set it afterwards, as the reports read it.
    Job.objects.filter(pk=job.pk).update(created_at=created)
    job.refresh_from_db()
    return job


@pytest.fixture
def generated(owner):
    """generated(type, format, params=None, owner=owner) -> a ReportRun whose
    file was written by the service, as the worker does."""

    def make(report_type: str, format: str, params=None, *, user=None, **options) -> ReportRun:
        run = services.report_request(
            report_type=report_type, format=format, params=params, owner=user or owner, **options
        )
        services.report_generate(run=run)
        run.refresh_from_db()
        return run

    return make


def stored(run: ReportRun) -> Path:
    return Path(run.file.path)


@pytest.fixture
def registered():
    """registered(ReportTypeClass) registers a report type for one test."""
    from reports.registry import register, unregister

    names: list[str] = []

    def add(cls):
        register(cls)
        names.append(cls.name)
        return cls

    yield add
    for name in names:
        unregister(name)
