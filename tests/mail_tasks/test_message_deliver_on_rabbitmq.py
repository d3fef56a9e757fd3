"""mail_tasks.tasks.message_deliver, the transactional send written with
Django's Tasks API, through a real worker on RabbitMQ and PostgreSQL to a
real SMTP server on loopback: the same guarantees as the @job_task one."""

import uuid
from email.utils import make_msgid

import pytest

from jobs.models import Job, JobStatus
from mail_tasks.models import MessageStatus, OutboundMessage
from mail_tasks.tasks import message_deliver
from tests.helpers import wait_for
from tests.mail_tasks.smtp_servers import Greylisting

pytestmark = pytest.mark.integration


def stored_message(to: str) -> OutboundMessage:
    """A rendered message waiting to be sent, as mail_tasks.services stores it."""
    return OutboundMessage.objects.create(
        idempotency_key=f"message:{uuid.uuid4().hex}",
        message_id=make_msgid(domain="example.com"),
        from_email="kit@example.com",
        to=to,
        subject="Welcome",
        body_text="Hello.",
    )


def test_a_django_task_sends_once_after_a_4xx_retry(smtp_server, mail_worker):
    server = smtp_server(Greylisting(times=1))
    mail_worker(server)
    message = stored_message("grey@example.com")

    result = message_deliver.enqueue(message.pk)

    def finished():
        result.refresh()
        return result.is_finished

    wait_for(finished, timeout=60, what=f"message_deliver to finish (status {result.status})")
    message.refresh_from_db()
    job = Job.objects.get(pk=result.id)
    assert (job.task_name, job.queue, job.priority) == ("mail_tasks.tasks.message_deliver", "email", "high")
    assert (job.status, job.attempts) == (JobStatus.SUCCESS, 2)
    assert result.return_value["status"] == MessageStatus.SENT
    assert (message.status, message.attempts) == (MessageStatus.SENT, 2)
    assert message.last_error == "451 4.7.1 Greylisted, try again later"
    assert server.handler.recipients() == ["grey@example.com"]
