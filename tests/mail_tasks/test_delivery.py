"""The worker side in-process, against a real SMTP server on loopback (or a
port nobody listens on): what happens to claims when a batch runs out of
time or loses its connection, and on the last retry."""

import uuid

import pytest

from jobs.models import Job
from mail_tasks import delivery, services
from mail_tasks.models import MessageStatus
from mail_tasks.smtp import ConnectionFailure
from tests.helpers import free_port

pytestmark = pytest.mark.django_db

JOB_ID = str(uuid.uuid4())


@pytest.fixture
def campaign():
    campaign = services.campaign_create(
        name="c", template="mail_tasks/newsletter", recipients=[f"u{i}@example.com" for i in range(3)]
    )
    Job.objects.all().delete()
    return campaign


@pytest.fixture
def nobody_listening(settings):
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", free_port(), 5


def states(campaign) -> set:
    return set(campaign.messages.values_list("status", "claimed_by"))


def test_a_batch_out_of_time_releases_its_claims_and_hands_the_rest_to_a_new_job(
    campaign, smtp_server, settings, monkeypatch
):
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", smtp_server().port
    monkeypatch.setattr(delivery, "TIME_BUDGET_SECONDS", -1)

    result = delivery.batch_send(campaign_id=campaign.pk, batch=0, job_id=JOB_ID, final_attempt=False)

    assert (result["out_of_time"], result["sent"]) == (True, 0)
    assert states(campaign) == {(MessageStatus.QUEUED, None)}
    assert Job.objects.get().args == [campaign.pk, 0]


def test_a_lost_connection_keeps_the_error_on_the_message_in_flight_and_releases_the_rest(campaign, nobody_listening):
    with pytest.raises(ConnectionFailure, match="Connection refused"):
        delivery.batch_send(campaign_id=campaign.pk, batch=0, job_id=JOB_ID, final_attempt=False)

    first, *rest = campaign.messages.order_by("pk")
    assert (first.status, first.attempts, first.claimed_by) == (MessageStatus.QUEUED, 1, None)
    assert "Connection refused" in first.last_error
    assert {(m.status, m.attempts, m.last_error, m.claimed_by) for m in rest} == {(MessageStatus.QUEUED, 0, "", None)}


def test_on_the_last_retry_what_could_not_be_sent_fails_with_the_reason(campaign, nobody_listening):
    with pytest.raises(ConnectionFailure):
        delivery.batch_send(campaign_id=campaign.pk, batch=0, job_id=JOB_ID, final_attempt=True)

    assert set(campaign.messages.values_list("status", flat=True)) == {MessageStatus.FAILED}
    assert all(
        error.endswith("(gave up after the last retry)")
        for error in campaign.messages.values_list("last_error", flat=True)
    )
