"""The operations dashboard in the admin, without a browser (see
test_dashboard_in_chromium for one): who may open it, and what it shows."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.utils import timezone

from jobs.models import JobStatus
from ops import broker
from tests.ops.conftest import make_job

pytestmark = pytest.mark.django_db
URL = "/admin/ops/dashboard/"


@pytest.fixture(autouse=True)
def one_worker(monkeypatch):
    stats = broker.worker_stats(
        "general@host-a",
        {
            "pool": {"max-concurrency": 2, "processes": [11, 12]},
            "total": {"jobs.noop": 7},
            "uptime": 100,
            "rusage": {"utime": 4.0, "stime": 1.0, "maxrss": 81920},
        },
    )
    monkeypatch.setattr(broker, "workers_stats", lambda: [stats])
    monkeypatch.setattr(broker, "queue_depths", lambda: {"default": broker.QueueDepth(messages=3, consumers=1)})


def test_staff_without_the_view_job_permission_cannot_open_it(client, django_user_model):
    client.force_login(django_user_model.objects.create_user("staff", is_staff=True))
    assert client.get(URL).status_code == 403
    assert URL not in client.get("/admin/").content.decode()


def test_anonymous_visitors_are_sent_to_the_admin_login(client):
    response = client.get(URL)
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")


def test_the_admin_index_links_to_it_for_those_who_may_view_jobs(client, django_user_model):
    user = django_user_model.objects.create_user("viewer", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_job"))
    client.force_login(user)
    index = client.get("/admin/").content.decode()
    assert f'<a href="{URL}"' in index and "Operations" in index


def test_it_shows_the_last_hour_queues_and_workers(admin_client):
    now = timezone.now() - timedelta(minutes=2)
    make_job(created=now, queued=0.1, started=0.5, finished=1.5)
    make_job(status=JobStatus.FAILURE, created=now, queued=0.1, started=0.5, finished=0.7)
    make_job(status=JobStatus.STARTED, created=now, queued=0.1, started=0.5)

    response = admin_client.get(URL)

    assert response.status_code == 200
    context = response.context
    assert dict(context["tiles"])["Error rate"] == "50.0 %"
    default = next(row for row in context["queues"] if row.name == "default")
    assert (default.ready, default.consumers, default.running, default.finished, default.failed) == (3, 1, 1, 2, 1)
    assert default.runtime_avg == pytest.approx(0.6)
    assert [worker.cpu_percent for worker in context["workers"]] == [5.0]
    assert context["workers"][0].max_rss_mib == 80
    page = response.content.decode()
    for chart in ("throughput", "queue-length", "completion-time", "error-rate", "worker-cpu", "worker-memory"):
        assert f'data-chart="{chart}"' in page
    assert "general@host-a" in page
