"""The worker side of sending: claim messages, render them, wait for the rate
limit, send them over one SMTP connection, record each outcome at once.

Never twice: a message is claimed (SENDING, claimed_by = this job) before it
is sent and marked SENT by one UPDATE right after the server accepts it. A
redelivered or retried job claims only what is not SENT; its own claims come
back to it. If the worker dies between the server's "250" and that UPDATE,
that one message goes again, with the same Message-ID: no other message can
be in that window, as a job sends one message at a time.

Never lost: a claim expires after the longest a job can live, so messages of
a job that vanished for good are claimed by the next job for their batch
(a retry of the DEAD job, or a campaign resume).
"""

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import timedelta

from django.conf import settings
from django.db import router, transaction
from django.db.models import F, Q, prefetch_related_objects
from django.utils import timezone

from jobs.exceptions import BadInput
from jobs.queues import QUEUE_TIME_LIMITS, Queue
from jobs.services import job_enqueue
from jobs.tracking import cached_statement, run_tracking_statement
from mail_tasks import ratelimit
from mail_tasks.models import Campaign, CampaignStatus, MessageStatus, OutboundMessage
from mail_tasks.rendering import MailTemplate, Rendered, address_domain
from mail_tasks.services import BATCH_TASK, CAMPAIGN_PRIORITY, campaign_finish_if_done
from mail_tasks.smtp import ConnectionFailure, PermanentFailure, SmtpSession, TemporaryFailure, build_message

# Messages claimed per round trip. Pause and cancel are seen at the next
# claim, so a running batch sends at most this many more after them; under a
# rate limit a chunk is about one second's worth, so that stays quick too.
CLAIM_CHUNK = 50
_LIMITS = QUEUE_TIME_LIMITS[Queue.EMAIL]
# No job outlives its hard time limit, so past this a claim's job is gone and
# another job may take the message.
CLAIM_LEASE = timedelta(seconds=_LIMITS.hard + 60)
# A batch slowed down by the rate limit stops here and hands the rest to a new
# job, well before the soft time limit would fail it.
TIME_BUDGET_SECONDS = _LIMITS.soft / 2
PROGRESS_EVERY = 100


@dataclass
class Outcome:
    sent: int = 0
    failed: int = 0
    bounced: int = 0
    deferred: int = 0
    out_of_time: bool = False
    last_error: str = ""
    last_response: str = ""
    connections: int = 0

    @property
    def done(self) -> int:
        return self.sent + self.failed + self.bounced + self.deferred


class _OutOfTime(Exception):
    pass


def _claimable(job_id: str) -> Q:
    now = timezone.now()
    mine_or_expired = Q(claimed_by=job_id) | Q(claimed_until__lt=now)
    campaign_running = Q(campaign__isnull=True) | Q(campaign__status=CampaignStatus.RUNNING)
    return (Q(status=MessageStatus.QUEUED) | (Q(status=MessageStatus.SENDING) & mine_or_expired)) & campaign_running


def claim(scope: Q, *, job_id: str, after_id: int, limit: int) -> list[OutboundMessage]:
    """The next `limit` sendable messages in `scope` after `after_id`, now
    claimed by this job. Two jobs never claim the same message: PostgreSQL
    skips rows another claim has locked, SQLite has one writer at a time."""
    with transaction.atomic():
        messages = list(
            OutboundMessage.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(scope, _claimable(job_id), pk__gt=after_id)
            .select_related("campaign")
            .order_by("pk")[:limit]
        )
        if messages:
            OutboundMessage.objects.filter(pk__in=[m.pk for m in messages]).update(
                status=MessageStatus.SENDING, claimed_by=job_id, claimed_until=timezone.now() + CLAIM_LEASE
            )
    # Only transactional messages have attachments: one query per chunk.
    prefetch_related_objects([m for m in messages if m.campaign_id is None], "attachments")
    return messages


def _chunk_size() -> int:
    rates = [r for r in (settings.MAIL_RATE_PER_SECOND, settings.MAIL_RATE_PER_DOMAIN_PER_SECOND) if r > 0]
    return max(1, min([CLAIM_CHUNK, *rates]))


def release(messages: list[OutboundMessage], *, job_id: str) -> None:
    """Hand claimed, unsent messages back to the queue."""
    OutboundMessage.objects.filter(
        pk__in=[m.pk for m in messages], status=MessageStatus.SENDING, claimed_by=job_id
    ).update(status=MessageStatus.QUEUED, claimed_by=None, claimed_until=None)


def fail_pending(scope: Q, *, job_id: str, error: str) -> int:
    """Give up on what is still queued in scope (or claimed by this job)."""
    mine = Q(status=MessageStatus.QUEUED) | Q(status=MessageStatus.SENDING, claimed_by=job_id)
    return OutboundMessage.objects.filter(scope, mine).update(
        status=MessageStatus.FAILED, last_error=error, claimed_by=None, claimed_until=None
    )


def _record(message: OutboundMessage, *, status: str, attempted: bool = True, **fields) -> None:
    """One UPDATE: the outcome, the claim released, the attempt counted."""
    if attempted:
        fields["attempts"] = F("attempts") + 1
    OutboundMessage.objects.filter(pk=message.pk).update(status=status, claimed_by=None, claimed_until=None, **fields)


def _mark_sent(message: OutboundMessage, *, response: str, subject: str) -> None:
    """_record(status=SENT), the app's one hand-written statement: it runs
    once per message sent, and compiling the ORM's UPDATE cost more than the
    database's work. Written once and bound on the server like the job
    core's tracking statements (jobs.tracking), its values prepared by the
    model's own fields. Never relaxed: a SENT that a crash forgot would send
    the message again."""
    fields = [OutboundMessage._meta.get_field(name) for name in ("status", "smtp_response", "sent_at", "subject")]

    def write(connection) -> str:
        quote = connection.ops.quote_name
        assignments = ", ".join(f"{quote(field.column)} = %s" for field in fields)
        return (
            f"UPDATE {quote(OutboundMessage._meta.db_table)} SET {assignments},"
            " attempts = attempts + 1, claimed_by = NULL, claimed_until = NULL WHERE id = %s"
        )

    def build(connection) -> tuple[str, list]:
        values = [MessageStatus.SENT.value, response, timezone.now(), subject[:998]]
        params = [field.get_db_prep_save(value, connection) for field, value in zip(fields, values, strict=True)]
        return cached_statement(connection, ("mail_mark_sent",), write), [*params, message.pk]

    run_tracking_statement(build, using=router.db_for_write(OutboundMessage))


class _Renderer:
    """Turns a claimed message into envelope and bytes; loads each template
    once per job, however many recipients use it."""

    def __init__(self):
        self.templates: dict[str, MailTemplate] = {}

    def prepare(self, message: OutboundMessage) -> tuple[str, str, bytes, str]:
        if message.context is not None:
            if message.template not in self.templates:
                self.templates[message.template] = MailTemplate(message.template)
            shared = message.campaign.context if message.campaign else {}
            rendered = self.templates[message.template].render({**shared, **message.context})
        elif message.body_text or message.body_html:
            rendered = Rendered(subject=message.subject, text=message.body_text, html=message.body_html)
        else:
            raise BadInput("nothing to send: the message failed before it was rendered; send it again from code")
        sender, recipient, data = build_message(
            from_email=message.from_email,
            to=message.to,
            message_id=message.message_id,
            rendered=rendered,
            attachments=[_read_attachment(a) for a in message.attachments.all()] if message.campaign_id is None else (),
        )
        return sender, recipient, data, rendered.subject


def _read_attachment(attachment) -> tuple[str, bytes, str]:
    try:
        with attachment.file.open("rb") as handle:
            return attachment.filename, handle.read(), attachment.mimetype
    except OSError as exc:
        raise BadInput(f"attachment {attachment.filename} cannot be read: {exc}") from None


def deliver(
    scope: Q,
    *,
    job_id: str,
    final_attempt: bool,
    deadline: float,
    progress: Callable[[int], None] | None = None,
) -> Outcome:
    """Send every sendable message in `scope` over one connection, in id
    order, each at most once. A ConnectionFailure propagates after the
    unsent claims are released (or, on the final attempt, failed)."""
    outcome = Outcome()
    renderer = _Renderer()
    after_id = 0
    with SmtpSession() as session:
        try:
            while chunk := claim(scope, job_id=job_id, after_id=after_id, limit=_chunk_size()):
                after_id = chunk[-1].pk
                for index, message in enumerate(chunk):
                    try:
                        _deliver_one(
                            message, session, renderer, outcome, final_attempt=final_attempt, deadline=deadline
                        )
                    except _OutOfTime:
                        release(chunk[index:], job_id=job_id)
                        outcome.out_of_time = True
                        return outcome
                    except ConnectionFailure as exc:
                        # The one in flight keeps the error; the rest just go back.
                        _record(message, status=MessageStatus.QUEUED, last_error=str(exc))
                        release(chunk[index + 1 :], job_id=job_id)
                        if final_attempt:
                            fail_pending(scope, job_id=job_id, error=f"{exc} (gave up after the last retry)")
                        raise
                    except BaseException:
                        # A configuration error, a soft time limit: the next
                        # job may take them at once instead of after the lease.
                        release(chunk[index:], job_id=job_id)
                        raise
                    if progress and outcome.done % PROGRESS_EVERY == 0:
                        progress(outcome.done)
        finally:
            outcome.connections = session.connections_opened
    return outcome


def _deliver_one(message, session, renderer, outcome: Outcome, *, final_attempt: bool, deadline: float) -> None:
    if time.monotonic() > deadline:
        raise _OutOfTime
    try:
        sender, recipient, data, subject = renderer.prepare(message)
    except BadInput as exc:
        outcome.failed += 1
        outcome.last_error = str(exc)
        _record(message, status=MessageStatus.FAILED, attempted=False, last_error=str(exc))
        return
    if ratelimit.limited() and not ratelimit.wait_for_slot(address_domain(message.to), deadline=deadline):
        raise _OutOfTime
    try:
        response = session.deliver(sender=sender, recipient=recipient, data=data)
    except TemporaryFailure as exc:
        outcome.last_error = str(exc)
        if final_attempt:
            outcome.failed += 1
            error = f"{exc} (gave up after the last retry)"
            _record(message, status=MessageStatus.FAILED, last_error=error, smtp_response=str(exc))
        else:
            outcome.deferred += 1
            _record(message, status=MessageStatus.QUEUED, last_error=str(exc), smtp_response=str(exc))
        return
    except PermanentFailure as exc:
        outcome.bounced += 1
        outcome.last_error = str(exc)
        _record(message, status=MessageStatus.BOUNCED, last_error=str(exc), smtp_response=str(exc))
        return
    # The server has the message: record it before anything else can fail.
    _mark_sent(message, response=response, subject=subject)
    outcome.sent += 1
    outcome.last_response = response


def message_send(*, message_id: int, job_id: str, final_attempt: bool) -> dict:
    """Send one message (transactional email). Its job ends as the message
    does: 5xx or bad input fail it at once, 4xx and connection trouble retry."""
    scope = Q(pk=message_id)
    outcome = deliver(
        scope, job_id=job_id, final_attempt=final_attempt, deadline=time.monotonic() + TIME_BUDGET_SECONDS
    )
    if outcome.sent:
        return {"status": MessageStatus.SENT, "smtp_response": outcome.last_response}
    if outcome.failed or outcome.bounced:
        raise BadInput(outcome.last_error)
    if outcome.deferred:
        raise TemporaryFailure(outcome.last_error)
    if outcome.out_of_time:
        error = "no rate-limit slot within the time budget"
        if final_attempt:
            fail_pending(scope, job_id=job_id, error=f"{error} (gave up after the last retry)")
        raise TemporaryFailure(error)
    # Nothing to claim: sent before (a redelivery), cancelled, or in another job's hands.
    status = OutboundMessage.objects.filter(pk=message_id).values_list("status", flat=True).first()
    if status is None:
        raise BadInput(f"outbound message {message_id} does not exist")
    return {"status": status}


def batch_send(
    *,
    campaign_id: int,
    batch: int,
    job_id: str,
    final_attempt: bool,
    progress: Callable[[int, str], None] | None = None,
) -> dict:
    """Send one batch of a campaign over one connection; see deliver()."""
    campaign = Campaign.objects.filter(pk=campaign_id).first()
    if campaign is None:
        raise BadInput(f"campaign {campaign_id} does not exist")

    def report(done: int) -> None:
        if progress:
            progress(min(99, done * 100 // campaign.batch_size), f"{done} of up to {campaign.batch_size} messages")

    outcome = deliver(
        Q(campaign_id=campaign_id, batch=batch),
        job_id=job_id,
        final_attempt=final_attempt,
        deadline=time.monotonic() + TIME_BUDGET_SECONDS,
        progress=report,
    )
    if outcome.out_of_time:
        # Slowed by the rate limit: a fresh job (and time limit) goes on.
        job_enqueue(task_name=BATCH_TASK, args=[campaign_id, batch], priority=CAMPAIGN_PRIORITY)
    else:
        campaign_finish_if_done(campaign_id)
        if outcome.deferred:
            # Retried with backoff; the retry sends only what is still queued.
            raise TemporaryFailure(f"{outcome.deferred} message(s) deferred by the server, e.g. {outcome.last_error}")
    return asdict(outcome)
