"""The local SMTP sink stores any message that arrives over SMTP, and its
pages show it (unknown charsets, lying charsets, broken MIME, NULs in
encoded headers) without a 500."""

import smtplib

import pytest
from django.urls import reverse

from mail_tasks.models import ReceivedEmail
from mail_tasks.sink import sink_start
from tests import helpers
from tests.helpers import free_port

HEAD = b"From: kit@example.com\r\nTo: ann@example.com\r\n"
HOSTILE = {
    "unknown charset": HEAD
    + b"Subject: unknown charset\r\nContent-Type: text/plain; charset=x-no-such-charset\r\n\r\nbody \xe9\xff\r\n",
    "lying charset": HEAD
    + b"Subject: lying charset\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\xff\xfe\xfd\r\n",
    "multipart without boundary": HEAD
    + b"Subject: no boundary\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative\r\n\r\nparts?\r\n",
    "unclosed multipart, bad base64": HEAD
    + b"Subject: unclosed\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n--XX\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!not base64@@@\r\n"
    b'--XX\r\nContent-Type: application/octet-stream; name="a\x01b.bin"\r\n'
    b"Content-Disposition: attachment; filename*=x-unknown''%FF%00\r\n\r\nzzz\r\n",
    "NUL in encoded subject": HEAD + b"Subject: =?utf-8?q?hi=00there?=\r\n\r\nbody\r\n",
    "unknown charset in encoded word": HEAD + b"Subject: =?x-unknown?q?abc?= =?utf-8?b?!!!?=\r\n\r\nbody\r\n",
    "8-bit header": HEAD + b"Subject: caf\xe9 \xff\r\nMessage-ID: <<<@>>>\r\n\r\nbody\r\n",
    "garbage headers": HEAD + b"Subject: x\r\nContent-Type: ;;;===\r\nDate: yesterday-ish\r\n\r\nbody\r\n",
}


@pytest.fixture
def sink(transactional_db):
    port = free_port()
    controller = sink_start(host="127.0.0.1", port=port)
    yield port
    controller.stop()


def test_every_hostile_message_is_stored_and_shown_without_a_500(sink, admin_client):
    with smtplib.SMTP("127.0.0.1", sink, timeout=10) as client:
        for raw in HOSTILE.values():
            client.sendmail("kit@example.com", ["ann@example.com"], raw)
    helpers.wait_for(lambda: ReceivedEmail.objects.count() == len(HOSTILE), what="the sink to store every message")

    listing = admin_client.get(reverse("mail_tasks:sink-list"))
    assert listing.status_code == 200
    for received in ReceivedEmail.objects.all():
        detail = admin_client.get(reverse("mail_tasks:sink-detail", args=[received.pk]))
        assert detail.status_code == 200, (received.subject, detail.content[:500])
        assert "ann@example.com" in detail.content.decode()
    shown = admin_client.get(
        reverse("mail_tasks:sink-detail", args=[ReceivedEmail.objects.get(subject="lying charset").pk])
    )
    assert "\ufffd" in shown.content.decode(), "undecodable bytes are shown as replacement characters"
