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


def test_on_the_embedded_broker_consumers_say_not_available_instead_of_zero(admin_client, monkeypatch, tmp_path):
    """The filesystem broker answers 0 consumers whoever consumes: the page
    and the metrics say it is not known instead."""
    from celery import current_app

    for folder in ("queue", "control"):
        (tmp_path / folder).mkdir()
    monkeypatch.setenv("CELERY_BROKER_READ_URL", "filesystem://")
    monkeypatch.setitem(current_app.conf, "broker_transport", "jobs.filesystem_broker:Transport")
    options = {
        name: str(tmp_path / folder)
        for name, folder in [("data_folder_in", "queue"), ("data_folder_out", "queue"), ("control_folder", "control")]
    }
    monkeypatch.setitem(current_app.conf, "broker_transport_options", options)
    monkeypatch.setattr(broker, "queue_depths", broker._queue_depths)

    depths = broker.queue_depths()
    assert {depth.consumers for depth in depths.values()} == {None}
    assert {depth.messages for depth in depths.values()} == {0}
    page = admin_client.get(URL).content.decode()
    assert "Consumers: not available on the embedded broker" in page
    assert '<td class="num" title="not available on the embedded broker">n/a</td>' in page
