"""Email through a real worker on RabbitMQ and PostgreSQL to real SMTP
servers on loopback: what the servers received is the evidence."""

from collections import Counter

import psycopg
import pytest
from celery.signals import before_task_publish

from jobs.models import Job, JobStatus
from mail_tasks import services
from mail_tasks.models import Campaign, CampaignStatus, MessageStatus, OutboundMessage
from tests.helpers import test_database_url, wait_for
from tests.mail_tasks.smtp_servers import Greylisting, Recording, Rejecting

pytestmark = pytest.mark.integration


def settled(message: OutboundMessage, timeout: float = 30) -> OutboundMessage:
    def reload():
        message.refresh_from_db()
        message.job.refresh_from_db()
        return message.job.is_finished

    wait_for(reload, timeout=timeout, what=f"the job sending to {message.to} to finish (message {message.status})")
    return message


def campaign_ended(campaign: Campaign, timeout: float = 60) -> Campaign:
    def reload():
        campaign.refresh_from_db()
        return campaign.status in (CampaignStatus.DONE, CampaignStatus.CANCELLED)

    wait_for(reload, timeout=timeout, what=f"campaign {campaign.name} to end (status {campaign.status})")
    return campaign


def test_a_transactional_email_arrives_once_with_its_alternatives_attachment_and_message_id(smtp_server, mail_worker):
    server = smtp_server()
    mail_worker(server)
    message = services.email_send(
        template="mail_tasks/welcome",
        to="ann@example.com",
        context={"name": "Ann & Bob", "url": "https://example.com/login"},
        attachments=[("terms.txt", "Be nice.", "text/plain")],
    )

    settled(message)

    assert message.status == MessageStatus.SENT
    assert message.attempts == 1
    assert message.smtp_response == "250 2.0.0 Ok: queued as Q1"
    assert message.job.status == JobStatus.SUCCESS
    [received] = server.received
    assert received.rcpt_tos == ["ann@example.com"]
    assert received.mail_from == "kit@example.com"
    assert received.message_id == message.message_id
    assert received.message["Subject"] == "Welcome to the kit, Ann & Bob"
    assert "Hello Ann & Bob," in received.message.get_body(("plain",)).get_content()
    assert "Hello Ann &amp; Bob," in received.message.get_body(("html",)).get_content()
    [attachment] = received.message.iter_attachments()
    assert (attachment.get_filename(), attachment.get_content()) == ("terms.txt", "Be nice.")


def test_a_4xx_answer_is_retried_with_backoff_and_sent_once(smtp_server, mail_worker):
    server = smtp_server(Greylisting(times=1))
    mail_worker(server)
    message = services.email_send(template="mail_tasks/welcome", to="grey@example.com")

    settled(message)

    assert message.status == MessageStatus.SENT
    assert message.attempts == 2
    assert message.last_error == "451 4.7.1 Greylisted, try again later"
    assert message.job.attempts == 2
    assert server.handler.recipients() == ["grey@example.com"]


def test_a_5xx_answer_bounces_the_message_at_once_and_keeps_the_servers_answer(smtp_server, mail_worker):
    server = smtp_server(Rejecting(prefix="nobody"))
    mail_worker(server)
    message = services.email_send(template="mail_tasks/welcome", to="nobody@example.com")

    settled(message)

    answer = "550 5.1.1 <nobody@example.com>: Recipient address rejected: User unknown"
    assert message.status == MessageStatus.BOUNCED
    assert (message.attempts, message.smtp_response, message.last_error) == (1, answer, answer)
    assert message.job.status == JobStatus.FAILURE
    assert message.job.attempts == 1
    assert message.job.error == f"BadInput: {answer}"
    assert server.received == []


def test_a_refused_connection_is_retried_until_the_server_is_up(smtp_server, mail_worker):
    server = smtp_server(start=False)
    # Full jitter can make each backoff 0 s: with the suite's 3 retries, all
    # of them were spent before the server started in one run of 30 or so.
    mail_worker(server, MAIL_RETRY_MAX="8")
    message = services.email_send(template="mail_tasks/welcome", to="patient@example.com")

    def refused_once():
        message.refresh_from_db()
        return "Connection refused" in message.last_error

    wait_for(refused_once, what="a first attempt to be refused")
    server.start()
    settled(message)

    assert message.status == MessageStatus.SENT
    assert message.attempts >= 2
    assert message.job.status == JobStatus.SUCCESS
    assert server.handler.recipients() == ["patient@example.com"]


def test_a_campaign_sends_each_batch_over_one_connection_and_bad_recipients_fail_alone(smtp_server, mail_worker):
    server = smtp_server(Rejecting(prefix="nobody"))
    mail_worker(server)
    recipients = [{"email": f"user{i}@example.com", "surname": f"Doe{i}", "plan": "pro"} for i in range(57)]
    recipients += [
        {"email": "nobody@example.com", "surname": "Nobody", "plan": "pro"},  # 550 from the server
        {"email": "nosurname@example.com", "plan": "pro"},  # the template needs a surname
        {"email": "not an address", "surname": "X", "plan": "pro"},  # refused before sending
    ]
    campaign = services.campaign_create(
        name="renewals", template="mail_tests/strict", recipients=recipients, batch_size=20
    )

    campaign_ended(campaign)

    assert campaign.status == CampaignStatus.DONE
    assert Counter(server.handler.recipients()) == Counter(f"user{i}@example.com" for i in range(57))
    assert server.handler.connections == 3  # one per batch
    assert services.campaign_progress(campaign) == {
        "total": 60,
        "sent": 57,
        "failed": 3,
        "pending": 0,
        "cancelled": 0,
        "percent": 100,
    }
    failures = dict(campaign.messages.exclude(status=MessageStatus.SENT).values_list("to", "status"))
    assert failures == {
        "nobody@example.com": MessageStatus.BOUNCED,
        "nosurname@example.com": MessageStatus.FAILED,
        "not an address": MessageStatus.FAILED,
    }
    assert "VariableDoesNotExist" in campaign.messages.get(to="nosurname@example.com").last_error
    first = next(r for r in server.received if r.rcpt_tos == ["user0@example.com"])
    assert first.message["Subject"] == "Your pro plan"
    assert "Dear Doe0," in first.message.get_body(("plain",)).get_content()
    assert set(Job.objects.filter(task_name="mail_tasks.batch_send").values_list("status", flat=True)) == {
        JobStatus.SUCCESS
    }


def _sent(campaign: Campaign) -> int:
    return campaign.messages.filter(status=MessageStatus.SENT).count()


def _batches_ended() -> bool:
    return not Job.objects.filter(task_name="mail_tasks.batch_send").exclude(status=JobStatus.SUCCESS).exists()


def test_a_paused_campaign_stops_its_running_batch_and_sends_the_rest_once_resumed(smtp_server, mail_worker):
    server = smtp_server(Recording(delay=0.02))
    mail_worker(server)
    # Batch 0 is two claims of CLAIM_CHUNK (50): the pause is seen between them.
    campaign = services.campaign_create(
        name="paused",
        template="mail_tasks/newsletter",
        recipients=[f"p{i}@example.com" for i in range(150)],
        batch_size=100,
    )
    wait_for(lambda: len(server.received) >= 10, what="the campaign to start sending")

    assert services.campaign_pause(campaign=campaign)
    wait_for(_batches_ended, what="every batch job to stop")

    assert len(server.received) == _sent(campaign) < 100
    assert services.campaign_progress(campaign)["pending"] == 150 - _sent(campaign)

    assert services.campaign_resume(campaign=Campaign.objects.get(pk=campaign.pk))
    campaign_ended(campaign)

    assert campaign.status == CampaignStatus.DONE
    assert Counter(server.handler.recipients()) == Counter(f"p{i}@example.com" for i in range(150))


def test_a_cancelled_campaign_stops_and_its_unsent_messages_are_cancelled(smtp_server, mail_worker):
    server = smtp_server(Recording(delay=0.02))
    mail_worker(server)
    campaign = services.campaign_create(
        name="cancelled",
        template="mail_tasks/newsletter",
        recipients=[f"c{i}@example.com" for i in range(150)],
        batch_size=100,
    )
    wait_for(lambda: len(server.received) >= 10, what="the campaign to start sending")

    assert services.campaign_cancel(campaign=campaign)
    wait_for(_batches_ended, what="every batch job to stop")

    progress = services.campaign_progress(campaign)
    assert progress["sent"] == len(server.received) < 100
    assert progress["cancelled"] == 150 - progress["sent"]
    assert progress["pending"] == 0
    assert len(set(server.handler.recipients())) == len(server.received)


def test_a_worker_killed_mid_batch_repeats_at_most_one_message_with_the_same_message_id(smtp_server, mail_worker):
    server = smtp_server(Recording(delay=0.02))
    first = mail_worker(server)
    addresses = [f"k{i}@example.com" for i in range(300)]
    campaign = services.campaign_create(
        name="crash", template="mail_tasks/newsletter", recipients=addresses, batch_size=100
    )
    wait_for(lambda: len(server.received) >= 40, what="the first batch to be under way")

    first.kill_main()
    killed_at = len(server.received)
    mail_worker(server)
    campaign_ended(campaign, timeout=120)

    assert killed_at < 300
    assert campaign.status == CampaignStatus.DONE
    assert _sent(campaign) == 300
    counts = Counter(server.handler.recipients())
    assert set(counts) == set(addresses)
    duplicates = [address for address, count in counts.items() if count > 1]
    assert len(duplicates) <= 1, duplicates
    for address in duplicates:
        copies = {r.message_id for r in server.received if r.rcpt_tos == [address]}
        assert copies == {OutboundMessage.objects.get(to=address).message_id}


def _max_in_window(stamps: list[float], window: float) -> int:
    stamps = sorted(stamps)
    return max(sum(1 for t in stamps[i:] if t - start < window) for i, start in enumerate(stamps))


def test_the_global_rate_limit_holds_across_two_workers(smtp_server, mail_worker):
    server = smtp_server()
    mail_worker(server, MAIL_RATE_PER_SECOND="10")
    mail_worker(server)
    campaign = services.campaign_create(
        name="limited",
        template="mail_tasks/newsletter",
        recipients=[f"r{i}@example.com" for i in range(30)],
        batch_size=10,
    )

    campaign_ended(campaign)

    stamps = sorted(r.at for r in server.received)
    assert len(stamps) == 30
    # Both workers sent: without a shared limit they would go twice as fast.
    assert Job.objects.filter(task_name="mail_tasks.batch_send").values("worker").distinct().count() == 2
    assert stamps[-1] - stamps[0] >= 29 / 10 - 0.2
    assert _max_in_window(stamps, 1.0) <= 10 + 2


def test_the_per_domain_rate_limit_holds_across_two_workers(smtp_server, mail_worker):
    server = smtp_server()
    mail_worker(server, MAIL_RATE_PER_DOMAIN_PER_SECOND="4")
    mail_worker(server)
    recipients = [f"a{i}@one.example" for i in range(8)] + [f"b{i}@two.example" for i in range(8)]
    campaign = services.campaign_create(
        name="per domain", template="mail_tasks/newsletter", recipients=recipients, batch_size=4
    )

    campaign_ended(campaign)

    for domain in ("one.example", "two.example"):
        stamps = sorted(r.at for r in server.received if r.rcpt_tos[0].endswith(domain))
        assert len(stamps) == 8
        assert stamps[-1] - stamps[0] >= 7 / 4 - 0.2, domain


def test_email_send_outside_a_transaction_publishes_only_once_the_message_is_complete(broker, transactional_db):
    """Called as the API calls it (autocommit), the job must not reach the
    broker before the message row names it: a worker claiming the message
    while that last write holds its row would skip it and send nothing."""
    seen_by_others: list = []

    def look_from_another_connection(headers=None, **_) -> None:
        if headers.get("task") != "mail_tasks.message_send":
            return
        with psycopg.connect(test_database_url(), autocommit=True) as other:
            row = other.execute(
                "SELECT job_id FROM mail_tasks_outboundmessage WHERE job_id = %s::uuid", [headers["id"]]
            )
            seen_by_others.append(row.fetchone())

    before_task_publish.connect(look_from_another_connection, weak=False)
    try:
        message = services.email_send(template="mail_tasks/welcome", to="ann@example.com", context={"name": "Ann"})
    finally:
        before_task_publish.disconnect(look_from_another_connection)

    assert seen_by_others == [(message.job_id,)]
