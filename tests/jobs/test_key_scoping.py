"""Deduplication keys are scoped to their sender (jobs/keys.py): over the
HTTP API nobody receives, or blocks, another owner's job or message, and
nobody can occupy a key the kit uses itself."""

import hashlib
import json
import uuid

import pytest
from django.contrib.auth.models import Permission
from rest_framework.test import APIClient

from jobs.models import Job
from jobs.services import job_enqueue
from mail_tasks import services as mail
from mail_tasks.models import OutboundMessage

pytestmark = pytest.mark.django_db


def client_for(django_user_model, name: str) -> APIClient:
    user = django_user_model.objects.create_user(name, password="pw-123456")
    user.user_permissions.add(
        *Permission.objects.filter(codename__in=["add_job", "add_outboundmessage"]),
    )
    client = APIClient()
    client.force_authenticate(user)
    client.user = user
    return client


def post(client, url, body):
    return client.generic("POST", url, json.dumps(body), content_type="application/json")


@pytest.fixture
def ann(django_user_model):
    return client_for(django_user_model, "ann")


@pytest.fixture
def bob(django_user_model):
    return client_for(django_user_model, "bob")


@pytest.mark.parametrize("key", ["nightly", "k" * 200, "ünï-çødé"])
def test_the_same_job_key_from_two_users_gives_each_their_own_job(ann, bob, key):
    first = post(ann, "/api/jobs/", {"task": "jobs.sleep", "kwargs": {"seconds": 0.1}, "unique_key": key})
    other = post(bob, "/api/jobs/", {"task": "jobs.noop", "unique_key": key})
    again = post(ann, "/api/jobs/", {"task": "jobs.noop", "unique_key": key})

    assert first.status_code == other.status_code == 202
    assert other.json()["id"] != first.json()["id"], "bob got ann's job back"
    assert other.json()["task"] == "jobs.noop" and other.json()["deduplicated"] is False
    # ann's own second request is deduplicated, and the answer says so.
    assert again.status_code == 200 and again.json()["deduplicated"] is True
    assert again.json()["id"] == first.json()["id"], "the key no longer deduplicates ann's own jobs"
    assert Job.objects.get(pk=other.json()["id"]).requested_by == bob.user


@pytest.mark.parametrize(
    "internal_key",
    [
        "media_tasks.renditions_create:{id}",
        "reports.report_generate:{id}",
    ],
)
def test_a_key_the_kit_uses_itself_cannot_be_taken_from_the_api(ann, internal_key):
    key = internal_key.format(id=uuid.uuid4())
    taken = post(ann, "/api/jobs/", {"task": "jobs.sleep", "kwargs": {"seconds": 5}, "unique_key": key})
    assert taken.status_code == 202

    task_name = key.rpartition(":")[0]
    real = job_enqueue(task_name=task_name, args=[key.rpartition(":")[2]], unique_key=key)

    assert str(real.pk) != taken.json()["id"], "an API call occupied the kit's own key"
    assert real.task_name == task_name


@pytest.mark.parametrize("key", ["signup-1", "x" * 200])
def test_the_same_message_key_from_two_users_never_returns_the_others_message(ann, bob, key):
    first = post(
        ann, "/api/mail/messages/", {"template": "mail_tasks/welcome", "to": "ann@example.com", "idempotency_key": key}
    )
    other = post(
        bob, "/api/mail/messages/", {"template": "mail_tasks/welcome", "to": "bob@example.com", "idempotency_key": key}
    )
    again = post(
        ann, "/api/mail/messages/", {"template": "mail_tasks/welcome", "to": "ann@example.com", "idempotency_key": key}
    )

    assert first.status_code == other.status_code == again.status_code == 202
    assert other.json()["message"]["id"] != first.json()["message"]["id"]
    assert other.json()["message"]["to"] == "bob@example.com", "bob saw ann's recipient"
    assert other.json()["message"]["idempotency_key"] == key
    assert again.json()["message"]["id"] == first.json()["message"]["id"]
    assert OutboundMessage.objects.count() == 2


def test_a_campaign_members_key_cannot_be_guessed_to_test_membership(bob):
    campaign = mail.campaign_create(name="c", template="mail_tasks/newsletter", recipients=["vip@example.com"])
    stored = campaign.messages.get().idempotency_key
    guesses = [
        stored,  # even the stored key itself, had it leaked
        f"campaign:{campaign.pk}:{hashlib.sha1(b'vip@example.com').hexdigest()}",
        f"campaign:{campaign.pk}:{hashlib.sha256(b'vip@example.com').hexdigest()}",
    ]
    assert hashlib.sha1(b"vip@example.com").hexdigest() not in stored
    assert hashlib.sha256(b"vip@example.com").hexdigest() not in stored

    for guess in guesses:
        response = post(
            bob,
            "/api/mail/messages/",
            {"template": "mail_tasks/welcome", "to": "bob@example.com", "idempotency_key": guess},
        )
        assert response.status_code == 202
        assert response.json()["message"]["to"] == "bob@example.com"
    assert campaign.messages.count() == 1
