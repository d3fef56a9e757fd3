"""An operator opens the operations dashboard in a real browser after a
real worker on RabbitMQ ran some jobs: every chart is drawn and has data,
and the worker is listed with its resource use."""

import pytest

from jobs.models import Job, JobStatus
from jobs.services import enqueue
from tests.helpers import wait_for

pytestmark = [pytest.mark.browser, pytest.mark.integration]


def chart_values(page, chart: str, element: str = "circle.point") -> list[float]:
    return [
        float(v)
        for v in page.locator(f'svg[data-chart="{chart}"] {element}').evaluate_all(
            "nodes => nodes.map(n => n.dataset.value)"
        )
    ]


def test_an_operator_sees_throughput_queues_completion_errors_and_workers(
    page, live_server, start_worker, django_user_model, artifacts_dir
):
    django_user_model.objects.create_superuser("operator", "operator@example.com", "pw-123456")
    worker = start_worker()
    done = [enqueue("jobs.noop") for _ in range(4)] + [enqueue("testapp.fail_with", "disk full")]
    wait_for(
        lambda: Job.objects.filter(pk__in=[j.pk for j in done], finished_at__isnull=False).count() == 5,
        what="the first jobs to finish",
    )
    # A backlog: one worker slot, several jobs that hold it.
    for _ in range(4):
        enqueue("testapp.block", 2)
    wait_for(lambda: Job.objects.filter(status=JobStatus.STARTED).exists(), what="a blocking job to start")

    page.goto(f"{live_server.url}/admin/")
    page.fill("#id_username", "operator")
    page.fill("#id_password", "pw-123456")
    page.click("input[type=submit]")
    page.get_by_role("link", name="Dashboard", exact=True).first.click()
    assert page.url.endswith("/admin/ops/dashboard/")
    assert page.locator("h1").inner_text() == "Operations dashboard"

    assert sum(chart_values(page, "throughput")) >= 5
    assert max(chart_values(page, "queue-length")) >= 2  # the backlog, right now
    assert max(chart_values(page, "completion-time")) > 0
    assert max(chart_values(page, "error-rate")) > 0  # the failed job
    assert chart_values(page, "worker-cpu", "rect.bar") and max(chart_values(page, "worker-memory", "rect.bar")) > 10
    assert page.locator("#ops-workers .ops-worker-name").all_inner_texts() == [worker.name]
    queues = page.locator("#ops-queues tbody tr").all_inner_texts()
    assert any(row.split("\t")[0] == "default" for row in queues)
    page.screenshot(path=artifacts_dir / "ops-dashboard.png", full_page=True)
