"""What an on-call engineer sees in the Job admin, in a real browser on a
real server, PostgreSQL and RabbitMQ: the list at 1366 px, the explainer of
a job stuck behind a queue nobody consumes, cancel's confirmation, the
retried mark and its toggle, failures grouped by cause and retried as a
group, the list's live mode, and (with a real worker) the job page's
progress bar moving without a reload. Screenshots go to test-artifacts/."""

import pytest
from django.utils import timezone

from jobs.models import Job, JobStatus
from jobs.services import enqueue
from ops.broker import cache as broker_cache
from tests.helpers import wait_for

pytestmark = [pytest.mark.browser]


@pytest.fixture
def operator(page, live_server, django_user_model):
    """The page, logged in as a superuser; returns the server's URL."""
    django_user_model.objects.create_superuser("operator", "operator@example.com", "pw-123456")
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", "operator")
    page.fill("#id_password", "pw-123456")
    page.click("input[type=submit]")
    page.wait_for_url(f"{live_server.url}/admin/")
    return live_server.url


def failed(task="testapp.fail_with", *args, error="RuntimeError: x", status=JobStatus.FAILURE) -> Job:
    """A job the broker holds, marked ended as a worker would mark it."""
    job = enqueue(task, *args)
    Job.objects.filter(pk=job.pk).update(status=status, error=error)
    return Job.objects.get(pk=job.pk)


def test_the_list_fits_1366_px_with_errors_and_times_to_the_second(page, operator, broker, artifacts_dir):
    failed(error="RuntimeError: the connection to smtp.example.org:587 timed out after 30 s while sending")
    enqueue("jobs.noop")
    page.set_viewport_size({"width": 1366, "height": 800})

    page.goto(f"{operator}/admin/jobs/job/")
    page.screenshot(path=artifacts_dir / "console-list-1366.png")

    results = page.locator("#changelist .results")
    created = page.locator("#result_list th.column-created_column").bounding_box()
    box = results.bounding_box()
    assert created["x"] + created["width"] <= min(1366, box["x"] + box["width"]), "created is out of view"
    assert results.evaluate("node => node.scrollWidth <= node.clientWidth"), "the list scrolls sideways"
    first_time = page.locator("#result_list time.job-time").first
    assert first_time.inner_text().endswith(" s ago")
    assert first_time.get_attribute("title")[-12:-4].count(":") == 2  # HH:MM:SS
    assert "timed out" in page.locator("#result_list .job-error").first.get_attribute("title")


def test_a_job_behind_a_queue_with_no_consumer_says_so(page, operator, broker, artifacts_dir):
    broker_cache.clear()
    stuck = enqueue("jobs.noop")
    wait_for(lambda: Job.objects.get(pk=stuck.pk).status == JobStatus.QUEUED, what="the broker to confirm")

    page.goto(f"{operator}/admin/jobs/job/{stuck.pk}/change/")

    sentence = page.locator(".job-explanation").inner_text()
    assert sentence.startswith("QUEUED on queue default with 0 jobs ahead of it")
    assert "no worker consumes queue default: start one (manage.py worker --group general)" in sentence
    page.screenshot(path=artifacts_dir / "console-why-not-running.png", full_page=True)


def test_cancel_asks_before_it_kills_a_running_job(page, operator, broker, artifacts_dir):
    running = enqueue("jobs.sleep", 60)
    Job.objects.filter(pk=running.pk).update(status=JobStatus.STARTED, worker="w1@host")

    page.goto(f"{operator}/admin/jobs/job/{running.pk}/change/")
    page.get_by_role("link", name="Cancel this job…").click()

    assert "cancelling kills it mid-task" in page.locator(".job-cancel-running").inner_text()
    assert Job.objects.get(pk=running.pk).status == JobStatus.STARTED
    page.screenshot(path=artifacts_dir / "console-cancel-confirmation.png", full_page=True)
    page.get_by_role("button", name="Yes, cancel this job").click()
    assert page.locator(".field-status_column .job-status").inner_text() == "REVOKED"
    assert Job.objects.get(pk=running.pk).status == JobStatus.REVOKED


def test_a_retried_failure_is_marked_and_hidden_until_the_toggle_shows_it(page, operator, broker, artifacts_dir):
    original = failed()

    page.goto(f"{operator}/admin/jobs/job/{original.pk}/change/")
    page.get_by_role("button", name="Retry this job").click()
    retry = Job.objects.get(retry_of=original)
    page.goto(f"{operator}/admin/jobs/job/?status__exact=FAILURE")
    assert page.locator(f"input[name=_selected_action][value='{original.pk}']").count() == 0

    page.locator("#changelist-filter").get_by_role("link", name="Shown").click()
    mark = page.locator("a.job-retried")
    assert mark.inner_text() == f"retried → {str(retry.pk)[:8]}"
    page.screenshot(path=artifacts_dir / "console-retried-mark.png")
    mark.click()
    assert str(retry.pk) in page.url


def test_failures_grouped_by_cause_and_a_group_retried(page, operator, broker, artifacts_dir):
    timeouts = [failed(error=f"TimeoutError: no answer from 10.0.0.{n} after {n * 5} s") for n in (1, 2, 3)]
    failed(error="BadInput: image 17 is not an image")

    page.goto(f"{operator}/admin/jobs/job/")
    page.get_by_role("link", name="Failures by cause").click()
    rows = page.locator("tr.job-failure-group")
    assert rows.count() == 2
    top = rows.first
    assert top.locator(".job-group-count").inner_text() == "3"
    assert top.locator(".job-group-message").inner_text() == "no answer from <n>.<n>.<n>.<n> after <n> s"
    page.screenshot(path=artifacts_dir / "console-failure-groups.png", full_page=True)

    top.get_by_role("button", name="Retry all 3").click()
    assert page.locator("ul.messagelist").inner_text().strip() == "Retried 3 jobs."
    assert page.locator("tr.job-failure-group").count() == 1
    assert Job.objects.filter(retry_of__in=[job.pk for job in timeouts]).count() == 3


def test_the_list_live_mode_refreshes_rows_in_place(page, operator, broker, artifacts_dir):
    job = enqueue("jobs.noop")
    page.goto(f"{operator}/admin/jobs/job/")
    page.evaluate("window.notReloaded = true")
    page.check("#job-list-live")

    Job.objects.filter(pk=job.pk).update(status=JobStatus.FAILURE, error="RuntimeError: changed under the list")
    page.locator("#result_list .job-error", has_text="changed under the list").wait_for(timeout=20_000)

    assert page.evaluate("window.notReloaded") is True
    assert page.locator("#result_list .job-status").first.inner_text() == "FAILURE"
    page.screenshot(path=artifacts_dir / "console-list-live.png")


@pytest.mark.integration
def test_the_job_page_follows_a_running_job_without_a_reload(page, operator, start_worker, artifacts_dir):
    start_worker()
    job = enqueue("jobs.sleep", 8, 8)
    page.goto(f"{operator}/admin/jobs/job/{job.pk}/change/")
    page.evaluate("window.notReloaded = true")

    bar = page.locator("progress.job-progress")
    seen = set()

    def progress_moved() -> bool:
        seen.add(int(bar.evaluate("node => node.value")))
        return len(seen - {0}) >= 2

    wait_for(progress_moved, timeout=30, interval=0.3, what="the progress bar to move twice")
    assert page.locator(".field-status_column .job-status").inner_text() == "STARTED"
    assert page.locator(".job-explanation").inner_text().startswith("STARTED on worker ")
    page.screenshot(path=artifacts_dir / "console-live-progress.png", full_page=True)

    page.locator(".field-status_column .job-status", has_text="SUCCESS").wait_for(timeout=30_000)
    assert page.evaluate("window.notReloaded") is True
    page.locator(".field-result_json", has_text='"slept"').wait_for(timeout=10_000)
    assert page.evaluate("window.notReloaded") is True


def test_the_dashboard_updates_its_charts_in_place(page, operator, broker, artifacts_dir):
    # The page's clock is Playwright's: its 30 s refresh comes at once.
    page.clock.install()
    page.goto(f"{operator}/admin/ops/dashboard/")
    page.evaluate("window.notReloaded = true")
    page.evaluate("document.querySelector('.ops-charts').dataset.old = 'yes'")
    tiles_before = page.locator(".ops-tiles").inner_text()
    for _ in range(3):
        job = failed(error="RuntimeError: shows up on the dashboard")
        Job.objects.filter(pk=job.pk).update(finished_at=timezone.now())

    page.clock.fast_forward("00:31")
    page.locator(".ops-charts:not([data-old])").wait_for(timeout=30_000)

    assert page.evaluate("window.notReloaded") is True
    assert page.locator(".ops-tiles").inner_text() != tiles_before
    page.screenshot(path=artifacts_dir / "console-dashboard-in-place.png", full_page=True)
