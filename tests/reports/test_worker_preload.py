"""A worker that consumes the reports queue imports the writers' libraries
before it forks its pool (reports.signals), so a pool child's first report
job does not pay for the import; other workers stay without them. Each case
builds a real WorkController (not started) in a fresh interpreter: this
one has long imported openpyxl."""

import os
import subprocess
import sys

import pytest

from tests.helpers import REPO

BUILD_WORKER = """
import sys
from config.celery_app import app
before = "openpyxl" in sys.modules or "reportlab" in sys.modules
app.WorkController(queues={queues!r}, concurrency=1, pool_cls="prefork", hostname="preload-test@localhost")
print(before, "openpyxl" in sys.modules, "reportlab.platypus" in sys.modules)
"""


def loaded_by_a_worker_on(*queues: str) -> list[str]:
    """[loaded before the worker was built, openpyxl after, reportlab after]"""
    done = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", BUILD_WORKER.format(queues=list(queues))],
        cwd=REPO,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1].split()


@pytest.mark.parametrize("queues", [("reports",), ("images", "reports")])
def test_a_worker_on_the_reports_queue_imports_the_writers_before_it_forks(queues):
    assert loaded_by_a_worker_on(*queues) == ["False", "True", "True"]


def test_a_worker_without_the_reports_queue_does_not_load_them():
    assert loaded_by_a_worker_on("default", "email") == ["False", "False", "False"]
