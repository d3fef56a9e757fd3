"""The local SMTP sink of `make run`: `manage.py smtp_sink` stores what it
receives, and staff see it at /mail/sink/."""

import signal
import smtplib
import subprocess
import sys
from email.message import EmailMessage

import pytest
from django.urls import reverse

from mail_tasks.models import ReceivedEmail
from mail_tasks.sink import received_store
from tests import helpers
from tests.helpers import free_port


def an_email() -> EmailMessage:
    email = EmailMessage()
    email["From"], email["To"], email["Subject"] = "kit@example.com", "ann@example.com", "Hello from the sink test"
    email["Message-ID"] = "<sink-test@example.com>"
    email.set_content("Plain words.")
    email.add_alternative("<p>Rich <script>alert(1)</script>words.</p>", subtype="html")
    return email


def test_the_command_stores_every_email_it_receives_and_stops_on_sigterm(transactional_db, worker_env, tmp_path):
    port = free_port()
    log = open(tmp_path / "sink.log", "w")  # aiosmtpd's own logging
    sink = subprocess.Popen(
        [sys.executable, "manage.py", "smtp_sink", "--port", str(port)],
        cwd=helpers.REPO,
        env=worker_env,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    try:
        assert "SMTP sink listening on 127.0.0.1:" in sink.stdout.readline()
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.send_message(an_email())
        stored = helpers.wait_for(ReceivedEmail.objects.first, what="the sink to store the email")
    finally:
        sink.send_signal(signal.SIGTERM)
        output, _ = sink.communicate(timeout=20)
        log.close()

    assert sink.returncode == 0
    assert "SMTP sink stopped." in output
    assert (stored.mail_from, stored.rcpt_to, stored.subject) == (
        "kit@example.com",
        ["ann@example.com"],
        "Hello from the sink test",
    )
    assert stored.message_id == "<sink-test@example.com>"
    assert b"Plain words." in bytes(stored.raw)


@pytest.mark.django_db
def test_staff_see_received_emails_and_others_are_sent_to_the_login(client, admin_client, django_user_model):
    stored = received_store(
        peer="127.0.0.1", mail_from="kit@example.com", rcpt_to=["ann@example.com"], raw=an_email().as_bytes()
    )
    client.force_login(django_user_model.objects.create_user("someone", password="pw-123456"))

    assert client.get(reverse("mail_tasks:sink-list")).status_code == 302
    listing = admin_client.get(reverse("mail_tasks:sink-list")).content.decode()
    detail = admin_client.get(reverse("mail_tasks:sink-detail", args=[stored.pk])).content.decode()

    assert "Hello from the sink test" in listing and "ann@example.com" in listing
    assert "Plain words." in detail
    # The HTML part is shown in a sandbox (no scripts), escaped into srcdoc.
    assert '<iframe sandbox srcdoc="&lt;p&gt;Rich &lt;script&gt;' in detail
