"""Hostile input through the mail admin, as a person submits it: a bad CSV
row fails that recipient alone, an id that is not one is a 404, a form
field PostgreSQL cannot store is a form error; never a 500."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from mail_tasks.models import Campaign, MessageStatus, OutboundMessage

pytestmark = pytest.mark.django_db


def upload(admin_client, csv: bytes, **fields):
    return admin_client.post(
        reverse("admin:mail_tasks_campaign_add"),
        {
            "name": "hostile",
            "template": "mail_tasks/newsletter",
            "recipients": SimpleUploadedFile("list.csv", csv, content_type="text/csv"),
            **fields,
        },
    )


def test_bad_csv_rows_fail_their_recipient_alone_and_the_campaign_goes_on(admin_client):
    csv = (
        b"email,name\n"
        b"ann@example.com,Ann\n"
        b"nul-name@example.com,Bo\x00b\n"
        b"nul\x00addr@example.com,Cy\n"
        b"tab\taddr@example.com,Di\n"
        b"esc\x1b@example.com,Ed\n"
        b"latin1@example.com,Jos\xe9\n"
        b"bad\xff@example.com,Gus\n"
        b"fay@example.com,Fay\n"
    )

    response = upload(admin_client, csv)

    assert response.status_code == 302, response.content[:2000]
    campaign = Campaign.objects.get()
    assert campaign.recipients_count == 8
    statuses = dict(campaign.messages.values_list("to", "status"))
    assert statuses["ann@example.com"] == statuses["fay@example.com"] == MessageStatus.QUEUED
    failed = campaign.messages.filter(status=MessageStatus.FAILED)
    assert failed.count() == 6
    errors = " ".join(failed.values_list("last_error", flat=True))
    assert "NUL" in errors and "control character" in errors and "not UTF-8" in errors


@pytest.mark.parametrize("name", ["na\x00me", "x" * 201])
def test_a_form_field_that_cannot_be_stored_is_a_form_error(admin_client, name):
    response = upload(admin_client, b"email\nann@example.com\n", name=name)

    assert response.status_code == 200
    assert b"errorlist" in response.content
    assert not Campaign.objects.exists()


@pytest.mark.parametrize("object_id", ["abc", "1.5", "00000000-0000-0000-0000-000000000000", "%00"])
def test_an_id_that_is_not_a_message_id_is_a_404_on_retry(admin_client, object_id):
    response = admin_client.post(f"/admin/mail_tasks/outboundmessage/{object_id}/retry/")

    assert response.status_code == 404
    assert not OutboundMessage.objects.exists()


@pytest.mark.parametrize("object_id", ["abc", "not-a-uuid", "%00"])
@pytest.mark.parametrize(
    "model", ["mail_tasks/outboundmessage", "mail_tasks/campaign", "jobs/job", "media_tasks/image"]
)
def test_an_id_that_is_not_one_on_an_admin_change_page_is_no_500(admin_client, model, object_id):
    response = admin_client.get(f"/admin/{model}/{object_id}/change/", follow=True)

    assert response.status_code in (200, 404)


@pytest.mark.parametrize("term", ["a\x00b", "\x00", "%00"])
@pytest.mark.parametrize("model", ["mail_tasks/outboundmessage", "jobs/job", "mail_tasks/campaign"])
def test_a_search_term_with_a_nul_is_no_500(admin_client, model, term):
    response = admin_client.get(f"/admin/{model}/", {"q": term})

    assert response.status_code in (200, 400)


@pytest.mark.parametrize("object_id", ["abc", "1", "not-a-uuid", "%00", "00000000-0000-0000-0000-000000000000"])
@pytest.mark.parametrize("action", ["retry", "cancel"])
def test_a_job_admin_button_with_an_id_that_is_not_a_job_is_a_404(admin_client, object_id, action):
    response = admin_client.post(f"/admin/jobs/job/{object_id}/{action}/")

    assert response.status_code == 404


def test_a_row_whose_subject_renders_hostile_fails_alone_when_the_batch_is_sent(admin_client, smtp_server, settings):
    import uuid

    from mail_tasks import delivery

    server = smtp_server()
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", server.port
    csv = (
        "email,name\n"
        "ann@example.com,Ann\n"
        "vt@example.com,Vi\x0bBcc: x@example.com\n"
        "esc@example.com,Ed\x1b[2J\n"
        f"long@example.com,{'L' * 1000}\n"
        "fay@example.com,Fay\n"
    ).encode()
    assert upload(admin_client, csv, batch_size="10").status_code == 302
    campaign = Campaign.objects.get()

    delivery.batch_send(campaign_id=campaign.pk, batch=0, job_id=str(uuid.uuid4()), final_attempt=False)

    statuses = dict(campaign.messages.values_list("to", "status"))
    assert statuses == {
        "ann@example.com": MessageStatus.SENT,
        "fay@example.com": MessageStatus.SENT,
        "vt@example.com": MessageStatus.FAILED,
        "esc@example.com": MessageStatus.FAILED,
        "long@example.com": MessageStatus.FAILED,
    }
    errors = campaign.messages.filter(status=MessageStatus.FAILED).values_list("last_error", flat=True)
    assert all("subject" in error for error in errors), list(errors)
    assert sorted(r.rcpt_tos[0] for r in server.handler.received) == ["ann@example.com", "fay@example.com"]
