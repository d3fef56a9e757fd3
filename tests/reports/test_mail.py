"""A report with recipients is emailed through the mail module once its
file is ready: attached when small, linked when large, once per address."""

import pytest

from mail_tasks.models import OutboundMessage
from reports import services
from tests.reports.conftest import stored

pytestmark = pytest.mark.django_db


def test_a_ready_report_is_emailed_to_each_recipient_as_an_attachment(generated):
    run = generated("jobs.export", "csv", email_to=["ops@example.com", "boss@example.com"])

    messages = OutboundMessage.objects.order_by("to")
    assert [message.to for message in messages] == ["boss@example.com", "ops@example.com"]
    message = messages[0]
    assert message.subject == "Report ready: Jobs (CSV)"
    assert "It is attached to this message." in message.body_text
    (attachment,) = message.attachments.all()
    assert attachment.filename == run.download_name
    assert attachment.file.read() == stored(run).read_bytes()
    assert message.job.task_name == "mail_tasks.message_send"


def test_a_report_too_large_to_attach_is_linked_instead(generated, settings):
    settings.REPORTS_EMAIL_MAX_ATTACHMENT_BYTES = 10
    settings.REPORTS_SITE_URL = "https://kit.example.com"

    run = generated("jobs.export", "csv", email_to=["ops@example.com"])

    message = OutboundMessage.objects.get()
    assert not message.attachments.exists()
    assert f"https://kit.example.com/api/reports/{run.id}/download/" in message.body_text


def test_generating_the_same_run_again_does_not_email_twice(generated):
    run = generated("jobs.export", "csv", email_to=["ops@example.com"])

    services.report_generate(run=run)

    assert OutboundMessage.objects.count() == 1


def test_a_report_without_recipients_sends_nothing(generated):
    generated("jobs.export", "csv")

    assert not OutboundMessage.objects.exists()


def test_without_the_mail_module_the_report_is_made_and_nothing_is_sent(generated, monkeypatch, caplog):
    monkeypatch.setattr("reports.mailing._email_send", lambda: None)

    run = generated("jobs.export", "csv", email_to=["ops@example.com"])

    assert stored(run).exists()
    assert not OutboundMessage.objects.exists()
    assert "mail_tasks is not installed; not emailing ops@example.com" in caplog.text
