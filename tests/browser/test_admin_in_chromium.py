"""An operator fixes a failed job from the admin, in a real browser: a real
worker on RabbitMQ runs the job, fails it, and runs the retry after the fix."""

import pytest

from jobs.models import Job, JobStatus
from jobs.services import enqueue
from tests.helpers import wait_for

pytestmark = [pytest.mark.browser, pytest.mark.integration]


def test_an_operator_retries_a_failed_job_from_the_admin_after_fixing_its_cause(
    page, live_server, start_worker, django_user_model, tmp_path, artifacts_dir
):
    django_user_model.objects.create_superuser("operator", "operator@example.com", "pw-123456")
    start_worker()
    fix = tmp_path / "fixed"
    failed = enqueue("testapp.fail_unless_file", str(fix))
    wait_for(lambda: Job.objects.get(pk=failed.pk).status == JobStatus.FAILURE, what="the job to fail")
    fix.touch()

    page.goto(f"{live_server.url}/admin/")
    page.fill("#id_username", "operator")
    page.fill("#id_password", "pw-123456")
    page.click("input[type=submit]")
    page.get_by_role("link", name="Jobs", exact=True).click()
    page.locator("#changelist-filter").get_by_role("link", name="FAILURE", exact=True).click()
    assert "status__exact=FAILURE" in page.url
    page.screenshot(path=artifacts_dir / "admin-jobs-failed.png", full_page=True)

    page.get_by_role("link", name=str(failed.pk)[:8]).click()
    assert f"{fix} is missing" in page.locator(".field-traceback pre").inner_text()
    page.screenshot(path=artifacts_dir / "admin-job-failed.png", full_page=True)
    page.go_back()

    page.check(f"input[name=_selected_action][value='{failed.pk}']")
    page.select_option("select[name=action]", "retry_selected")
    page.get_by_role("button", name="Go").click()
    assert page.locator("ul.messagelist").inner_text().strip() == "Retried 1 job."

    retried = Job.objects.get(retry_of=failed)
    page.goto(f"{live_server.url}/admin/jobs/job/{retried.pk}/change/")

    def shows_success() -> bool:
        page.reload()
        return page.locator(".field-status_column .job-status").inner_text() == "SUCCESS"

    wait_for(shows_success, interval=0.5, what="the retried job's page to show SUCCESS")
    page.screenshot(path=artifacts_dir / "admin-job-retried.png", full_page=True)
    history = page.locator(".job-retry-history").inner_text()
    assert f"{str(failed.pk)[:8]} FAILURE the original" in history
    assert '"found"' in page.locator(".field-result_json").inner_text()
