"""The email services without a broker or SMTP server: what is stored, what
is refused and why, and which jobs are asked for. Tests run in a transaction
that never commits, so no job is published."""

import io
from collections import Counter

import pytest
from django.db import transaction

from jobs.exceptions import BadInput
from jobs.models import Job
from mail_tasks import services
from mail_tasks.models import Campaign, CampaignStatus, MessageStatus, OutboundMessage

pytestmark = pytest.mark.django_db


def batch_jobs(campaign: Campaign) -> list[list]:
    return sorted(
        Job.objects.filter(task_name="mail_tasks.batch_send", args__0=campaign.pk).values_list("args", flat=True)
    )


def test_email_send_renders_subject_text_and_html_and_asks_for_a_high_priority_job():
    message = services.email_send(
        template="mail_tasks/welcome",
        to="Ann <ann@example.com>",
        context={"name": "Ann & Bob", "url": "https://x.test/"},
    )

    message.refresh_from_db()
    assert message.status == MessageStatus.QUEUED
    assert message.subject == "Welcome to the kit, Ann & Bob"
    assert "Hello Ann & Bob," in message.body_text  # text is not HTML-escaped
    assert "Hello Ann &amp; Bob," in message.body_html
    assert message.message_id.startswith("<") and message.message_id.endswith("@example.com>")
    assert (message.job.task_name, message.job.args, message.job.priority) == (
        "mail_tasks.message_send",
        [message.pk],
        "high",
    )


def test_email_send_writes_in_the_callers_transaction():
    with pytest.raises(RuntimeError), transaction.atomic():
        services.email_send(template="mail_tasks/welcome", to="ann@example.com")
        raise RuntimeError("the caller's own write failed")

    assert not OutboundMessage.objects.exists()
    assert not Job.objects.exists()


def test_the_same_idempotency_key_returns_the_first_message_and_asks_for_no_second_job():
    first = services.email_send(template="mail_tasks/welcome", to="ann@example.com", idempotency_key="reset-42")
    second = services.email_send(template="mail_tasks/welcome", to="ann@example.com", idempotency_key="reset-42")

    assert second.pk == first.pk
    assert second.message_id == first.message_id
    assert Job.objects.count() == 1


def test_every_message_gets_its_own_stable_message_id():
    messages = [services.email_send(template="mail_tasks/welcome", to=f"u{i}@example.com") for i in range(20)]
    assert len({m.message_id for m in messages}) == 20


class Exploding:
    def __str__(self):
        raise RuntimeError("the database is gone")


@pytest.mark.parametrize(
    ("to", "template", "context", "error"),
    [
        (
            "ann@example.com",
            "mail_tasks/welcome",
            {"name": "Ann\r\nBcc: all@example.com"},
            "subject contains a line break (header injection)",
        ),
        (
            "ann@example.com\nBcc: all@example.com",
            "mail_tasks/welcome",
            {},
            "recipient contains a line break (header injection)",
        ),
        ("ann.example.com", "mail_tasks/welcome", {}, "recipient 'ann.example.com' is not a valid email address"),
        ("ann@example.com", "mail_tasks/nope", {}, "email template mail_tasks/nope/subject.txt does not exist"),
        (
            "ann@example.com",
            "mail_tasks/welcome",
            {"name": Exploding()},
            "subject.txt failed to render: RuntimeError: the database is gone",
        ),
        ("ann@example.com", "mail_tests/strict", {"plan": "pro"}, "body.txt failed to render: VariableDoesNotExist"),
    ],
)
def test_bad_input_fails_its_message_with_a_clear_error_and_sends_nothing(to, template, context, error):
    message = services.email_send(template=template, to=to, context=context)

    message.refresh_from_db()
    assert message.status == MessageStatus.FAILED
    assert error in message.last_error
    assert message.job is None
    assert not Job.objects.exists()


def test_attachments_are_stored_with_the_message(tmp_path, settings):
    settings.MEDIA_ROOT = tmp_path
    report = tmp_path / "report.csv"
    report.write_text("a,b\n1,2\n")
    message = services.email_send(
        template="mail_tasks/welcome", to="ann@example.com", attachments=[report, ("note.txt", "hello", "text/plain")]
    )

    stored = {a.filename: (a.mimetype, a.file.read()) for a in message.attachments.all()}
    assert stored == {"report.csv": ("text/csv", b"a,b\n1,2\n"), "note.txt": ("text/plain", b"hello")}


def test_a_campaign_of_ten_thousand_recipients_is_split_into_batches_with_one_job_each():
    addresses = [f"user{i}@example.com" for i in range(10_000)]
    recipients = [*addresses, "USER7@example.com", "not-an-address"]  # a duplicate and a bad one

    campaign = services.campaign_create(
        name="big", template="mail_tasks/newsletter", recipients=recipients, batch_size=500
    )

    campaign.refresh_from_db()
    assert (campaign.status, campaign.recipients_count, campaign.batches) == (CampaignStatus.RUNNING, 10_001, 21)
    # The last batch holds only the bad address: nothing to send, no job.
    assert batch_jobs(campaign) == [[campaign.pk, batch] for batch in range(20)]
    assert set(Job.objects.values_list("priority", flat=True)) == {"low"}
    per_batch = Counter(campaign.messages.values_list("batch", flat=True))
    assert per_batch == {**dict.fromkeys(range(20), 500), 20: 1}
    assert campaign.messages.values("message_id").distinct().count() == 10_001
    bad = campaign.messages.get(to="not-an-address")
    assert (bad.status, bad.last_error) == (
        MessageStatus.FAILED,
        "recipient 'not-an-address' is not a valid email address",
    )
    assert services.campaign_progress(campaign) == {
        "total": 10_001,
        "sent": 0,
        "failed": 1,
        "pending": 10_000,
        "cancelled": 0,
        "percent": 0,
    }


def test_a_campaign_reads_recipients_and_their_context_from_a_csv_upload():
    upload = io.BytesIO("email,name\nann@example.com,Ann\nbob@example.com,Bøb\n".encode())

    campaign = services.campaign_create(
        name="csv", template="mail_tasks/newsletter", recipients=services.recipients_from_csv(upload)
    )

    contexts = dict(campaign.messages.values_list("to", "context"))
    assert contexts == {
        "ann@example.com": {"email": "ann@example.com", "name": "Ann"},
        "bob@example.com": {"email": "bob@example.com", "name": "Bøb"},
    }


def test_a_csv_without_an_email_column_is_refused():
    with pytest.raises(BadInput, match="needs an 'email' column; its columns are: address, name"):
        services.campaign_create(
            name="csv",
            template="mail_tasks/newsletter",
            recipients=services.recipients_from_csv(io.StringIO("address,name\nx,y\n")),
        )
    assert not Campaign.objects.exists()


def test_a_campaign_reads_recipients_from_a_queryset(django_user_model):
    for name in ("ann", "bob"):
        django_user_model.objects.create_user(name, email=f"{name}@example.com")

    campaign = services.campaign_create(
        name="users",
        template="mail_tasks/newsletter",
        recipients=services.recipients_from_queryset(django_user_model.objects.all(), fields=["username"]),
    )

    assert dict(campaign.messages.values_list("to", "context__username")) == {
        "ann@example.com": "ann",
        "bob@example.com": "bob",
    }


def test_a_missing_template_refuses_the_whole_campaign():
    with pytest.raises(BadInput, match="mail_tasks/gone/subject.txt does not exist"):
        services.campaign_create(name="x", template="mail_tasks/gone", recipients=["ann@example.com"])
    assert not Campaign.objects.exists()


def test_pause_resume_and_cancel_move_the_campaign_and_ask_for_jobs_only_where_needed():
    campaign = services.campaign_create(
        name="steer", template="mail_tasks/newsletter", recipients=[f"u{i}@example.com" for i in range(6)], batch_size=2
    )
    campaign.messages.filter(batch=0).update(status=MessageStatus.SENT)
    Job.objects.all().delete()

    assert services.campaign_pause(campaign=campaign)
    assert not services.campaign_pause(campaign=campaign)
    assert services.campaign_resume(campaign=campaign)
    assert batch_jobs(campaign) == [[campaign.pk, 1], [campaign.pk, 2]]  # batch 0 has nothing left
    assert services.campaign_cancel(campaign=campaign)
    assert not services.campaign_resume(campaign=campaign)

    campaign.refresh_from_db()
    assert campaign.status == CampaignStatus.CANCELLED
    assert services.campaign_progress(campaign) == {
        "total": 6,
        "sent": 2,
        "failed": 0,
        "pending": 0,
        "cancelled": 4,
        "percent": 100,
    }


def test_a_campaign_is_done_only_when_nothing_is_left_to_send():
    campaign = services.campaign_create(
        name="d", template="mail_tasks/newsletter", recipients=["a@example.com", "b@example.com"]
    )
    campaign.messages.filter(to="a@example.com").update(status=MessageStatus.SENT)
    assert not services.campaign_finish_if_done(campaign.pk)

    campaign.messages.filter(to="b@example.com").update(status=MessageStatus.BOUNCED)
    assert services.campaign_finish_if_done(campaign.pk)
    campaign.refresh_from_db()
    assert campaign.status == CampaignStatus.DONE and campaign.finished_at is not None


def test_retrying_failed_messages_queues_them_again_where_they_belong():
    transactional = services.email_send(template="mail_tasks/welcome", to="ann@example.com")
    never_rendered = services.email_send(template="mail_tasks/nope", to="bob@example.com")
    campaign = services.campaign_create(
        name="r", template="mail_tasks/newsletter", recipients=[f"u{i}@example.com" for i in range(4)], batch_size=2
    )
    OutboundMessage.objects.filter(pk=transactional.pk).update(status=MessageStatus.FAILED)
    campaign.messages.filter(to="u3@example.com").update(status=MessageStatus.BOUNCED)
    campaign.messages.exclude(to="u3@example.com").update(status=MessageStatus.SENT)
    services.campaign_finish_if_done(campaign.pk)
    Job.objects.all().delete()

    retried, skipped = services.messages_retry(
        messages=OutboundMessage.objects.select_related("campaign").exclude(status=MessageStatus.SENT)
    )

    assert sorted(m.to for m in retried) == ["ann@example.com", "u3@example.com"]
    assert skipped == {"it failed before it was rendered (send it again from code)": 1}
    assert set(OutboundMessage.objects.filter(pk__in=[m.pk for m in retried]).values_list("status", flat=True)) == {
        "queued"
    }
    assert Job.objects.get(task_name="mail_tasks.message_send").args == [transactional.pk]
    assert batch_jobs(campaign) == [[campaign.pk, 1]]
    campaign.refresh_from_db()
    assert campaign.status == CampaignStatus.RUNNING  # reopened: it has something to send again
    never_rendered.refresh_from_db()
    assert never_rendered.status == MessageStatus.FAILED


def test_retrying_all_failed_of_a_campaign_leaves_bounces_alone():
    campaign = services.campaign_create(
        name="r", template="mail_tasks/newsletter", recipients=[f"u{i}@example.com" for i in range(4)], batch_size=2
    )
    campaign.messages.filter(to__in=["u0@example.com", "u3@example.com"]).update(status=MessageStatus.FAILED)
    campaign.messages.filter(to="u1@example.com").update(status=MessageStatus.BOUNCED)
    campaign.messages.filter(to="u2@example.com").update(status=MessageStatus.SENT)
    Job.objects.all().delete()

    assert services.campaign_retry_failed(campaign=campaign) == 2

    assert dict(campaign.messages.values_list("to", "status")) == {
        "u0@example.com": "queued",
        "u1@example.com": "bounced",
        "u2@example.com": "sent",
        "u3@example.com": "queued",
    }
    assert batch_jobs(campaign) == [[campaign.pk, 0], [campaign.pk, 1]]
