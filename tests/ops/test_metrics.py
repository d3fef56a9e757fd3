"""The Prometheus endpoint: what it counts from the job table, and who may
read it. Broker and worker answers are stubbed here; test_metrics_on_rabbitmq
asks the real ones."""

from datetime import timedelta

import pytest
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from jobs.models import JobStatus
from ops import broker, metrics
from tests.ops.conftest import make_job

pytestmark = pytest.mark.django_db


def scrape(client, **headers) -> dict:
    """{(name, sorted labels): value} of one authorised scrape; read it with
    `sample`."""
    response = client.get("/metrics", **headers)
    assert response.status_code == 200, response.content
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def sample(samples: dict, name: str, **labels) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


@pytest.fixture
def staff_client(client, django_user_model):
    client.force_login(django_user_model.objects.create_user("ops", is_staff=True))
    return client


@pytest.fixture(autouse=True)
def quiet_broker(monkeypatch):
    """A broker with two ready messages on `images` and one worker."""
    monkeypatch.setattr(broker, "queue_depths", lambda: {"images": broker.QueueDepth(messages=2, consumers=1)})
    monkeypatch.setattr(broker, "workers_online", lambda: ["general@host-a"])
    monkeypatch.setattr(broker, "dead_letter_messages", lambda: 0)
    monkeypatch.setattr(broker, "workers_resources", lambda: [])


@pytest.fixture
def half_past(monkeypatch):
    """The counters' hour started 30 minutes ago, whenever the test runs."""
    start = timezone.now() - timedelta(minutes=30)
    monkeypatch.setattr(metrics, "current_period_start", lambda: start)
    return start


def test_finished_jobs_are_counted_by_queue_task_and_status_with_runtime_and_wait_histograms(staff_client, half_past):
    now = timezone.now() - timedelta(seconds=5)
    for runtime in (0.2, 0.2, 3):
        make_job(task="testapp.block", created=now, queued=0.01, started=0.5, finished=0.5 + runtime)
    make_job(task="testapp.block", status=JobStatus.FAILURE, created=now, queued=0.01, started=1, finished=1.1)

    samples = scrape(staff_client)

    block = {"queue": "default", "task": "testapp.block"}
    assert sample(samples, "kit_jobs_finished_total", **block, status="SUCCESS") == 3
    assert sample(samples, "kit_jobs_finished_total", **block, status="FAILURE") == 1
    assert sample(samples, "kit_job_runtime_seconds_count", **block) == 4
    assert sample(samples, "kit_job_runtime_seconds_bucket", **block, le="0.25") == 3  # 0.2, 0.2 and the 0.1 failure
    assert sample(samples, "kit_job_runtime_seconds_bucket", **block, le="2.5") == 3
    assert sample(samples, "kit_job_runtime_seconds_bucket", **block, le="5.0") == 4
    assert sample(samples, "kit_job_runtime_seconds_bucket", **block, le="+Inf") == 4
    assert sample(samples, "kit_job_runtime_seconds_sum", **block) == pytest.approx(3.5)
    assert sample(samples, "kit_job_wait_seconds_bucket", **block, le="0.5") == 3
    assert sample(samples, "kit_job_wait_seconds_bucket", **block, le="1.0") == 4
    assert sample(samples, "kit_job_error_ratio", **block) == pytest.approx(0.25)


def test_jobs_that_finished_before_this_hour_or_were_created_before_the_lookback_are_not_counted(
    staff_client, half_past, settings
):
    settings.OPS_METRICS_LOOKBACK_HOURS = 2
    make_job(created=half_past - timedelta(minutes=10), started=1, finished=2)  # finished last hour
    make_job(created=timezone.now() - timedelta(hours=3), started=1, finished=3 * 3600 - 60)  # created too long ago
    make_job(task="jobs.noop", created=timezone.now() - timedelta(minutes=1), started=1, finished=2)

    samples = scrape(staff_client)

    counted = {dict(labels)["task"]: n for (name, labels), n in samples.items() if name == "kit_jobs_finished_total"}
    assert counted == {"jobs.noop": 1}


def test_unfinished_jobs_are_gauges_by_status(staff_client):
    for status in (JobStatus.QUEUED, JobStatus.QUEUED, JobStatus.STARTED, JobStatus.RETRYING):
        make_job(queue="images", task="media_tasks.renditions_create", status=status)

    samples = scrape(staff_client)

    def active(status):
        return sample(samples, "kit_jobs", queue="images", task="media_tasks.renditions_create", status=status)

    assert (active("QUEUED"), active("STARTED"), active("RETRYING")) == (2, 1, 1)


def test_cancelled_jobs_are_not_errors_but_dead_and_lost_ones_are(staff_client, half_past):
    now = timezone.now() - timedelta(seconds=5)
    for status in (JobStatus.REVOKED, JobStatus.DEAD, JobStatus.LOST, JobStatus.SUCCESS):
        make_job(task="testapp.fail_with", status=status, created=now, finished=1)

    samples = scrape(staff_client)

    assert sample(samples, "kit_job_error_ratio", queue="default", task="testapp.fail_with") == 0.5


def test_broker_queues_and_workers_are_exported(staff_client):
    samples = scrape(staff_client)

    assert sample(samples, "kit_queue_messages", queue="images") == 2
    assert sample(samples, "kit_queue_consumers", queue="images") == 1
    assert sample(samples, "kit_broker_up") == 1
    assert sample(samples, "kit_workers_online") == 1
    assert sample(samples, "kit_worker_up", worker="general@host-a") == 1


def test_an_unreachable_broker_is_reported_not_raised(staff_client, monkeypatch):
    monkeypatch.setattr(broker, "queue_depths", lambda: None)
    samples = scrape(staff_client)
    assert sample(samples, "kit_broker_up") == 0


def test_the_oldest_pending_and_queued_job_of_each_queue_has_an_age_and_every_other_queue_reads_zero(staff_client):
    now = timezone.now()
    make_job(queue="email", status=JobStatus.PENDING, created=now - timedelta(seconds=400))
    make_job(queue="email", status=JobStatus.PENDING, created=now - timedelta(seconds=30))
    # QUEUED: its wait counts from the broker's confirmation, not creation.
    make_job(queue="email", status=JobStatus.QUEUED, created=now - timedelta(seconds=1000), queued=1000 - 120)
    # Parked with a countdown: not late until it is due.
    make_job(
        queue="reports", status=JobStatus.PENDING, created=now - timedelta(seconds=600), eta=now + timedelta(hours=1)
    )
    make_job(queue="images", status=JobStatus.STARTED, created=now - timedelta(seconds=900))

    samples = scrape(staff_client)

    def age(queue, status):
        return sample(samples, "kit_job_oldest_age_seconds", queue=queue, status=status)

    assert 400 <= age("email", "PENDING") < 460
    assert 120 <= age("email", "QUEUED") < 180
    assert age("reports", "PENDING") == 0
    assert age("images", "PENDING") == age("images", "QUEUED") == age("default", "QUEUED") == 0


def test_jobs_finished_in_the_last_sixty_minutes_are_counted_per_queue_and_status_with_zeros(staff_client):
    now = timezone.now()
    make_job(queue="images", status=JobStatus.LOST, created=now - timedelta(minutes=50), finished=50 * 60 - 5)
    make_job(queue="images", status=JobStatus.LOST, created=now - timedelta(minutes=90), finished=10 * 60)

    samples = scrape(staff_client)

    assert sample(samples, "kit_jobs_finished_last_hour", queue="images", status="LOST") == 1
    assert sample(samples, "kit_jobs_finished_last_hour", queue="images", status="DEAD") == 0
    assert sample(samples, "kit_jobs_finished_last_hour", queue="email", status="SUCCESS") == 0


def test_dead_letters_worker_resources_and_alert_thresholds_are_exported(staff_client, monkeypatch, settings):
    monkeypatch.setattr(broker, "dead_letter_messages", lambda: 4)
    monkeypatch.setattr(
        broker,
        "workers_resources",
        lambda: [
            broker.worker_resources(
                "heavy@host-b",
                {
                    "main": {"pid": 10, "cpu_seconds": 1.5, "rss_bytes": 50_000_000},
                    "children": [
                        {"pid": 11, "cpu_seconds": 2.0, "rss_bytes": 70_000_000},
                        {"pid": 12, "cpu_seconds": 0.5, "rss_bytes": 30_000_000},
                    ],
                },
            )
        ],
    )
    settings.OPS_ALERT_THRESHOLDS = {**settings.OPS_ALERT_THRESHOLDS, "pending_age_seconds": 42}

    samples = scrape(staff_client)

    assert sample(samples, "kit_dead_letter_messages") == 4
    assert sample(samples, "kit_worker_cpu_seconds_total", worker="heavy@host-b", process="main") == 1.5
    assert sample(samples, "kit_worker_cpu_seconds_total", worker="heavy@host-b", process="pool") == 2.5
    assert sample(samples, "kit_worker_resident_memory_bytes", worker="heavy@host-b", process="pool") == 100_000_000
    assert sample(samples, "kit_worker_pool_processes", worker="heavy@host-b") == 2
    assert sample(samples, "kit_alert_threshold", threshold="pending_age_seconds") == 42
    assert sample(samples, "kit_alert_threshold", threshold="error_ratio") == 0.1


def test_a_worker_that_does_not_know_the_resources_command_is_online_without_resources(monkeypatch):
    class Control:
        def broadcast(self, command, **options):
            return [{"old@host": {"error": f"No such command: {command}"}}, {"new@host": {"main": {}, "children": []}}]

    monkeypatch.undo()  # the real broker functions, not quiet_broker's stubs
    monkeypatch.setattr(broker.current_app, "control", Control())
    assert [worker.name for worker in broker.workers_resources()] == ["new@host"]
    assert broker.workers_online() == ["new@host", "old@host"]  # it answered: it is online


# -- Who may read them ---------------------------------------------------------


def test_anonymous_requests_are_refused(client, settings):
    settings.OPS_METRICS_TOKEN = "s3cret-token"
    response = client.get("/metrics")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_the_metrics_token_is_accepted_and_a_wrong_one_refused(client, settings):
    settings.OPS_METRICS_TOKEN = "s3cret-token"
    assert client.get("/metrics", headers={"Authorization": "Bearer s3cret-token"}).status_code == 200
    assert client.get("/metrics", headers={"Authorization": "Bearer s3cret-tokeN"}).status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Basic s3cret-token"}).status_code == 401


def test_a_logged_in_user_who_is_not_staff_is_refused(client, django_user_model):
    client.force_login(django_user_model.objects.create_user("someone"))
    assert client.get("/metrics").status_code == 401


def test_loopback_needs_no_token_only_in_development(client, settings):
    settings.OPS_METRICS_TOKEN = ""
    settings.DEBUG = False
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 401
    settings.DEBUG = True
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 401


def test_the_health_check_answers_anyone_with_nothing_but_ok(client):
    response = client.get("/healthz")
    assert (response.status_code, response.content) == (200, b"ok\n")
