"""Files expire: the hourly clean-up deletes them, and the temporary files
a killed worker left behind."""

import os
import time
from datetime import timedelta

import pytest
from celery import current_app
from django.conf import settings
from django.utils import timezone

from reports import services
from reports.models import ReportRun
from tests.reports.conftest import api, stored

pytestmark = pytest.mark.django_db


def test_a_new_file_expires_after_the_configured_time(generated, settings):
    settings.REPORTS_FILE_TTL_HOURS = 2
    before = timezone.now()

    run = generated("jobs.export", "csv")

    assert before + timedelta(hours=2) <= run.expires_at <= timezone.now() + timedelta(hours=2)


def test_expired_files_are_deleted_and_their_runs_kept_as_expired(generated, owner):
    expired = generated("jobs.export", "csv")
    current = generated("jobs.export", "xlsx")
    path = stored(expired)
    ReportRun.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(minutes=1))

    assert services.reports_delete_expired() == 1

    assert not path.exists()
    expired.refresh_from_db()
    assert expired.file.name == "" and expired.rows == 1
    assert stored(current).exists()
    assert api(owner).get(f"/api/reports/{expired.id}/download/").status_code == 410


def test_a_second_clean_up_finds_nothing_to_do(generated):
    run = generated("jobs.export", "csv")
    ReportRun.objects.filter(pk=run.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    services.reports_delete_expired()

    assert services.reports_delete_expired() == 0


def test_temporary_files_older_than_a_day_are_removed(reports_root):
    folder = reports_root / "reports" / "2026" / "03"
    folder.mkdir(parents=True)
    stale, fresh, report = folder / ".abc.csv.1234.part", folder / ".def.csv.5678.part", folder / "abc.csv"
    for path in (stale, fresh, report):
        path.write_text("x")
    two_days_ago = time.time() - 2 * 24 * 3600
    os.utime(stale, (two_days_ago, two_days_ago))
    os.utime(report, (two_days_ago, two_days_ago))

    services.reports_delete_expired()

    assert not stale.exists()
    assert fresh.exists() and report.exists()


def test_beat_runs_the_clean_up_every_hour_on_the_reports_queue():
    entry = settings.CELERY_BEAT_SCHEDULE["reports-delete-expired"]

    assert entry["task"] == "reports.delete_expired"
    assert entry["schedule"] == 3600
    task = current_app.tasks[entry["task"]]
    assert task.queue == "reports"
