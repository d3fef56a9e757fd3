"""Email jobs. Thin: each calls one function of mail_tasks/delivery.py and
tells it whether this is the last try, so the messages themselves end FAILED
rather than queued forever when the retries run out."""

import uuid

from django.conf import settings

from jobs.base_task import job_task
from jobs.django_tasks import transient_errors
from jobs.exceptions import TransientError
from jobs.queues import Queue, RetryPolicy
from mail_tasks import delivery

try:
    from django.tasks import task
except ImportError:  # Django before 6.0: the django-tasks backport
    from django_tasks import task

# 4xx answers mean throttling or greylisting, which last minutes: the first
# retry waits up to MAIL_RETRY_BACKOFF_SECONDS, doubling up to an hour.
MAIL_RETRY_POLICY = RetryPolicy(
    max_retries=settings.MAIL_RETRY_MAX,
    backoff_seconds=settings.MAIL_RETRY_BACKOFF_SECONDS,
    backoff_max_seconds=3600,
    jitter=True,
)


def _job_id(task) -> str:
    return task.request.id or str(uuid.uuid4())


def _final_attempt(task) -> bool:
    return task.request.retries >= task.max_retries


@job_task(
    name="mail_tasks.message_send",
    queue=Queue.EMAIL,
    transient_errors=(TransientError,),
    retry_policy=MAIL_RETRY_POLICY,
)
def message_send(self, message_id: int) -> dict:
    """Send one stored message (transactional email), at most once."""
    return delivery.message_send(message_id=message_id, job_id=_job_id(self), final_attempt=_final_attempt(self))


# The same send written with Django's Tasks API (jobs/django_tasks.py): a
# plain function, enqueued with `message_deliver.enqueue(message.pk)`, run by
# the same workers with the same guarantees. Its job's task name is its
# module path, "mail_tasks.tasks.message_deliver". The README shows the two
# side by side.
@task(queue_name=Queue.EMAIL.value, priority=50, takes_context=True)  # priority > 0: the kit's "high"
@transient_errors(TransientError, retry_policy=MAIL_RETRY_POLICY)
def message_deliver(context, message_id: int) -> dict:
    """Send one stored message (transactional email), at most once."""
    return delivery.message_send(message_id=message_id, job_id=context.job_id, final_attempt=context.final_attempt)


@job_task(
    name="mail_tasks.batch_send", queue=Queue.EMAIL, transient_errors=(TransientError,), retry_policy=MAIL_RETRY_POLICY
)
def batch_send(self, campaign_id: int, batch: int) -> dict:
    """Send one batch of a campaign over one SMTP connection."""
    return delivery.batch_send(
        campaign_id=campaign_id,
        batch=batch,
        job_id=_job_id(self),
        final_attempt=_final_attempt(self),
        progress=self.progress,
    )
