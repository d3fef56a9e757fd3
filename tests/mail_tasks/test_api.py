"""The email API: 202 with a job for a queued email, 400 with the reason for
bad input, campaign progress for its owner or a viewer, nothing for anonymous."""

import json

import pytest
from django.contrib.auth.models import Permission
from rest_framework.authtoken.models import Token

from jobs.models import Job
from mail_tasks import services
from mail_tasks.models import MessageStatus, OutboundMessage

pytestmark = pytest.mark.django_db


def post_message(client, body, **extra):
    return client.post("/api/mail/messages/", data=json.dumps(body), content_type="application/json", **extra)


def user_with(django_user_model, name, *codenames):
    user = django_user_model.objects.create_user(name, password="pw-123456")
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="mail_tasks", codename__in=codenames))
    return user


def test_anonymous_users_can_neither_send_nor_read(client):
    campaign = services.campaign_create(name="c", template="mail_tasks/newsletter", recipients=["a@example.com"])

    assert post_message(client, {"template": "mail_tasks/welcome", "to": "a@example.com"}).status_code in (401, 403)
    assert client.get(f"/api/mail/campaigns/{campaign.pk}/").status_code in (401, 403)
    assert not OutboundMessage.objects.filter(campaign__isnull=True).exists()


def test_a_token_user_with_the_permission_queues_an_email_and_gets_202_with_its_job(client, django_user_model):
    sender = user_with(django_user_model, "sender", "add_outboundmessage")
    token = Token.objects.create(user=sender)

    response = post_message(
        client,
        {
            "template": "mail_tasks/welcome",
            "to": "ann@example.com",
            "context": {"name": "Ann"},
            "idempotency_key": "k-1",
        },
        HTTP_AUTHORIZATION=f"Token {token.key}",
    )

    assert response.status_code == 202
    body = response.json()
    job = Job.objects.get()
    assert response["Location"].endswith(f"/api/jobs/{job.id}/")
    assert (body["job"]["id"], body["job"]["task"]) == (str(job.id), "mail_tasks.message_send")
    assert job.requested_by == sender
    message = OutboundMessage.objects.get()
    assert body["message"]["subject"] == "Welcome to the kit, Ann"
    assert (body["message"]["status"], body["message"]["message_id"]) == ("queued", message.message_id)


def test_sending_needs_the_add_permission(client, django_user_model):
    client.force_login(user_with(django_user_model, "reader"))

    response = post_message(client, {"template": "mail_tasks/welcome", "to": "a@example.com"})

    assert response.status_code == 403
    assert "mail_tasks.add_outboundmessage" in response.json()["detail"]
    assert not OutboundMessage.objects.exists()


@pytest.mark.parametrize(
    "body",
    [
        {"template": "mail_tasks/welcome", "to": "a@example.com\r\nBcc: b@example.com"},
        {"template": "mail_tasks/welcome", "to": "not an address"},
        {"template": "mail_tasks/no-such-template", "to": "a@example.com"},
        {"template": "mail_tasks/welcome", "to": "a@example.com", "context": {"name": "Ann\x0bBcc: b@example.com"}},
        {"template": "mail_tasks/welcome", "to": "a@example.com", "context": {"name": "Ann\x1b[2J"}},
        {"template": "mail_tasks/welcome", "to": "a@example.com", "context": {"name": "A" * 1000}},
        {"template": "mail_tasks/welcome", "to": "a@example.com", "context": {"name": "Ann\u2028Bcc: b@example.com"}},
    ],
)
def test_bad_input_gets_400_with_the_reason_and_stores_nothing(admin_client, body):
    response = post_message(admin_client, body)

    assert response.status_code == 400, response.content
    assert response.json()["detail"]
    assert not OutboundMessage.objects.exists(), "a refused request left a message behind"
    assert not Job.objects.exists()


def test_template_names_cannot_climb_out_of_the_template_folders(admin_client):
    response = post_message(admin_client, {"template": "../config/settings", "to": "a@example.com"})

    assert response.status_code == 400
    assert "template" in response.json()
    assert not OutboundMessage.objects.exists()


def test_campaign_progress_is_for_its_owner_and_for_viewers_only(client, django_user_model):
    owner = user_with(django_user_model, "owner")
    stranger = user_with(django_user_model, "stranger")
    viewer = user_with(django_user_model, "viewer", "view_campaign")
    campaign = services.campaign_create(
        name="c",
        template="mail_tasks/newsletter",
        recipients=["a@example.com", "b@example.com", "bad"],
        created_by=owner,
    )
    campaign.messages.filter(to="a@example.com").update(status=MessageStatus.SENT)
    url = f"/api/mail/campaigns/{campaign.pk}/"

    client.force_login(stranger)
    assert client.get(url).status_code == 404
    for user in (owner, viewer):
        client.force_login(user)
        response = client.get(url)
        assert response.status_code == 200
        assert response.json()["status"] == "running"
        assert response.json()["progress"] == {
            "total": 3,
            "sent": 1,
            "failed": 1,
            "pending": 1,
            "cancelled": 0,
            "percent": 66,
        }
