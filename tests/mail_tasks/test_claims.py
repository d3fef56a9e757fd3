"""Claims, the heart of "never twice": a message is sent only by the job
that claimed it, a redelivered job gets its own claims back, and a claim
left by a job that vanished expires."""

import uuid
from datetime import timedelta

import pytest
from django.db.models import Q
from django.utils import timezone

from mail_tasks import services
from mail_tasks.delivery import claim
from mail_tasks.models import MessageStatus, OutboundMessage

pytestmark = pytest.mark.django_db

JOB_A, JOB_B = str(uuid.uuid4()), str(uuid.uuid4())


@pytest.fixture
def campaign():
    return services.campaign_create(
        name="c", template="mail_tasks/newsletter", recipients=[f"u{i}@example.com" for i in range(5)]
    )


def claimed(campaign, job_id, limit=10):
    return [m.to for m in claim(Q(campaign=campaign), job_id=job_id, after_id=0, limit=limit)]


def test_two_jobs_never_claim_the_same_message(campaign):
    first = claimed(campaign, JOB_A, limit=3)
    second = claimed(campaign, JOB_B)

    assert first == ["u0@example.com", "u1@example.com", "u2@example.com"]
    assert second == ["u3@example.com", "u4@example.com"]
    assert set(campaign.messages.values_list("status", flat=True)) == {MessageStatus.SENDING}


def test_a_redelivered_job_takes_back_its_own_claims(campaign):
    first = claimed(campaign, JOB_A)

    assert claimed(campaign, JOB_A) == first


def test_another_job_takes_a_claim_only_once_its_lease_expired(campaign):
    claimed(campaign, JOB_A)
    assert claimed(campaign, JOB_B) == []

    campaign.messages.update(claimed_until=timezone.now() - timedelta(seconds=1))

    assert len(claimed(campaign, JOB_B)) == 5
    assert set(campaign.messages.values_list("claimed_by", flat=True)) == {uuid.UUID(JOB_B)}


def test_sent_failed_and_cancelled_messages_are_never_claimed(campaign):
    for status, address in [
        (MessageStatus.SENT, "u0"),
        (MessageStatus.FAILED, "u1"),
        (MessageStatus.BOUNCED, "u2"),
        (MessageStatus.CANCELLED, "u3"),
    ]:
        OutboundMessage.objects.filter(to=f"{address}@example.com").update(status=status)

    assert claimed(campaign, JOB_A) == ["u4@example.com"]


def test_nothing_is_claimed_while_the_campaign_is_paused(campaign):
    services.campaign_pause(campaign=campaign)
    assert claimed(campaign, JOB_A) == []

    services.campaign_resume(campaign=campaign)
    assert len(claimed(campaign, JOB_A)) == 5
