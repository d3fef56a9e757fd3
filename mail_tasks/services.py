"""Outbound email: send one message, run a campaign, follow and steer it,
retry what failed. Plain functions that write in the caller's transaction;
jobs are published when it commits. The worker side is mail_tasks/delivery.py.
"""

import codecs
import csv
import json
import logging
import math
import mimetypes
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping
from email.utils import make_msgid
from pathlib import Path

from django.conf import settings
from django.core.files import File
from django.core.files.base import ContentFile
from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, transaction
from django.db.models import Count, Exists, IntegerField, OuterRef, Q, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from jobs.exceptions import BadInput
from jobs.keys import keyed_digest
from jobs.queues import Priority
from jobs.services import job_enqueue
from jobs.storable import storable_text, unstorable_reason
from mail_tasks.models import (
    FAILED_STATUSES,
    PENDING_STATUSES,
    Campaign,
    CampaignStatus,
    MessageStatus,
    OutboundAttachment,
    OutboundMessage,
)
from mail_tasks.rendering import MailTemplate, address_domain, check_address, check_header

logger = logging.getLogger(__name__)

MESSAGE_TASK = "mail_tasks.message_send"
BATCH_TASK = "mail_tasks.batch_send"
# Rows per INSERT when a campaign's messages are created.
INSERT_CHUNK = 1000
# Transactional mail (a password reset) goes before campaign batches on the
# same queue: a person is waiting for it.
TRANSACTIONAL_PRIORITY = Priority.HIGH
CAMPAIGN_PRIORITY = Priority.LOW


def _new_message_id() -> str:
    # The sender's domain, not Django's default (the host name, looked up
    # with socket.getfqdn(), which can hang on DNS).
    return make_msgid(domain=address_domain(settings.DEFAULT_FROM_EMAIL) or "localhost")


def _json_context(value: Mapping, what: str) -> dict:
    """A campaign's contexts are stored and rendered later, so JSON only."""
    try:
        return json.loads(json.dumps(dict(value), cls=DjangoJSONEncoder))
    except (TypeError, ValueError) as exc:
        raise BadInput(f"{what} must be JSON (strings, numbers, dates): {exc}") from None


def _attachment(item) -> tuple[str, bytes, str]:
    """(filename, content, mimetype) from a tuple like EmailMessage.attach's,
    a pathlib.Path, or a Django File (a report's FileField, say)."""
    if isinstance(item, Path):
        filename, content, mimetype = item.name, item.read_bytes(), ""
    elif isinstance(item, File):
        filename, content, mimetype = Path(item.name).name, b"".join(item.chunks()), ""
    else:
        filename, content, mimetype = item
    check_header(filename, "attachment filename")
    if isinstance(content, str):
        content = content.encode()
    return filename, content, mimetype or mimetypes.guess_type(filename)[0] or "application/octet-stream"


def _insert(message: OutboundMessage) -> tuple[OutboundMessage, bool]:
    """Insert, or return the message that won a race for the same key."""
    try:
        with transaction.atomic():  # a savepoint: the caller's transaction survives a duplicate
            message.save(force_insert=True)
    except IntegrityError:
        existing = OutboundMessage.objects.filter(idempotency_key=message.idempotency_key).first()
        if existing is None:
            raise
        return existing, False
    return message, True


def email_send(
    *,
    template: str,
    to: str,
    context: Mapping | None = None,
    attachments: Iterable = (),
    from_email: str | None = None,
    idempotency_key: str | None = None,
    priority: Priority | str = TRANSACTIONAL_PRIORITY,
    requested_by=None,
    record_refusal: bool = True,
) -> OutboundMessage:
    """Render `template` for `to` now, store the message in the caller's
    transaction, and send it from a job once that commits.

    Bad input (a line break in the subject or an address, a malformed
    address, a missing template, a context that fails to render) stores the
    message FAILED with the reason in `last_error`, and sends nothing. With
    an `idempotency_key`, a second call returns the first message. With
    `record_refusal=False` (the API: its client gets a 400 and must be left
    with nothing stored) bad input raises BadInput and stores nothing.
    """
    if idempotency_key:
        existing = OutboundMessage.objects.filter(idempotency_key=idempotency_key).first()
        if existing is not None:
            return existing
    message = OutboundMessage(
        idempotency_key=idempotency_key or f"message:{uuid.uuid4().hex}",
        message_id=_new_message_id(),
        from_email=from_email or settings.DEFAULT_FROM_EMAIL,
        to=to[:320],
        template=template[:200],
    )
    try:
        check_address(message.from_email, "sender")
        check_address(to)
        files = [_attachment(item) for item in attachments]
        # The recipient's address is always there as {{ email }}, as in campaigns.
        rendered = MailTemplate(template).render({"email": to, **(context or {})})
    except BadInput as exc:
        if not record_refusal:
            raise
        message.status = MessageStatus.FAILED
        message.last_error = str(exc)
        logger.warning("Email to %r not sent: %s", to, exc)
        return _insert(message)[0]
    message.subject, message.body_text, message.body_html = rendered.subject, rendered.text, rendered.html
    # One transaction, so the job is published only after its last write: a
    # worker must never find the message half made (its row locked by the
    # UPDATE below, which the claim skips, and the job would end with
    # nothing sent).
    with transaction.atomic():
        message, created = _insert(message)
        if not created:
            return message
        for filename, content, mimetype in files:
            OutboundAttachment.objects.create(
                message=message, filename=filename, mimetype=mimetype, file=ContentFile(content, name=filename)
            )
        message.job = job_enqueue(
            task_name=MESSAGE_TASK, args=[message.pk], priority=priority, requested_by=requested_by
        )
        OutboundMessage.objects.filter(pk=message.pk).update(job=message.job)
    return message


# -- Campaigns ------------------------------------------------------------------


def recipients_from_csv(file) -> Iterator[dict]:
    """Rows of a CSV with an `email` column (a text file, or a binary one in
    UTF-8, such as an upload); the other columns become the recipient's
    template context. Bytes that are not UTF-8 come through as lone
    surrogates (surrogateescape), so campaign_create fails that row alone
    instead of the whole list."""
    binary = isinstance(file.read(0), bytes)
    lines = codecs.iterdecode(file, "utf-8-sig", errors="surrogateescape") if binary else file
    reader = csv.DictReader(lines)
    try:
        if "email" not in (reader.fieldnames or []):
            columns = ", ".join(reader.fieldnames or []) or "none"
            raise BadInput(f"the CSV needs an 'email' column; its columns are: {columns}")
        for row in reader:
            yield {key: value for key, value in row.items() if key is not None}
    except (UnicodeDecodeError, csv.Error) as exc:
        raise BadInput(f"the CSV cannot be read near line {reader.line_num}: {exc}") from None


def recipients_from_queryset(
    queryset: QuerySet, *, email_field: str = "email", fields: Iterable[str] = ()
) -> Iterator[dict]:
    """One recipient per row, `fields` as its context; read in chunks."""
    for row in queryset.values(email_field, *fields).iterator(chunk_size=2000):
        yield {**row, "email": row.pop(email_field)}


def _recipient(item: str | Mapping) -> tuple[str, dict]:
    if isinstance(item, str):
        return item.strip(), {"email": item.strip()}
    context = _json_context(item, "a recipient's context")
    address = context.get("email")
    return (address.strip() if isinstance(address, str) else ""), context


def campaign_create(
    *,
    name: str,
    template: str,
    recipients: Iterable[str | Mapping],
    context: Mapping | None = None,
    from_email: str | None = None,
    batch_size: int | None = None,
    created_by=None,
) -> Campaign:
    """Store a campaign and one message per distinct recipient, in batches of
    `batch_size`, and a job per batch that runs once the transaction commits.

    Recipients are addresses, or mappings with an `email` key whose values
    are that recipient's context (recipients_from_csv, _from_queryset). A
    malformed address fails its own message; the rest go on. A missing
    template or a bad sender refuses the whole campaign (BadInput).
    """
    from_email = from_email or settings.DEFAULT_FROM_EMAIL
    check_address(from_email, "sender")
    MailTemplate(template)  # exists and parses; rendering is per recipient, later
    shared = _json_context(context or {}, "the campaign's context")
    batch_size = batch_size or settings.MAIL_BATCH_SIZE
    if batch_size < 1:
        raise BadInput(f"batch size must be at least 1, not {batch_size}")
    with transaction.atomic():
        campaign = Campaign.objects.create(
            name=name,
            template=template,
            context=shared,
            from_email=from_email,
            batch_size=batch_size,
            created_by=created_by,
        )
        seen: set[str] = set()
        to_send: set[int] = set()
        rows: list[OutboundMessage] = []
        count = 0
        for item in recipients:
            address, recipient_context = _recipient(item)
            normalised = address.lower()
            if normalised in seen:
                continue  # the same person twice in a list gets one email
            seen.add(normalised)
            # A value PostgreSQL cannot store (a NUL from a CSV, a lone
            # surrogate) fails this recipient alone; the rest go on.
            unstorable = unstorable_reason({"email": address, **recipient_context})
            if unstorable:
                address, recipient_context = storable_text(address), {}
            message = OutboundMessage(
                campaign=campaign,
                batch=count // batch_size,
                # Keyed, so nobody can compute a list member's key
                # and learn from it whether an address is on the list.
                idempotency_key=f"campaign:{campaign.pk}:{keyed_digest(normalised, purpose='campaign')}",
                message_id=_new_message_id(),
                from_email=from_email,
                to=address[:320],
                template=template,
                context=recipient_context,
            )
            try:
                if unstorable:
                    raise BadInput(f"this recipient's {unstorable[0]} {unstorable[1]}")
                check_address(address)
                to_send.add(message.batch)
            except BadInput as exc:
                message.status, message.last_error = MessageStatus.FAILED, str(exc)
            rows.append(message)
            count += 1
            if len(rows) >= INSERT_CHUNK:
                OutboundMessage.objects.bulk_create(rows)
                rows = []
        OutboundMessage.objects.bulk_create(rows)
        campaign.recipients_count, campaign.batches = count, math.ceil(count / batch_size)
        campaign.save(update_fields=["recipients_count", "batches"])
        _dispatch(campaign.pk, sorted(to_send), requested_by=created_by)
        if not to_send:
            campaign_finish_if_done(campaign.pk)
    return campaign


def _dispatch(campaign_id: int, batches: Iterable[int] | None = None, *, requested_by=None) -> int:
    """A job per batch (by default every batch that has messages to send)."""
    if batches is None:
        batches = (
            OutboundMessage.objects.filter(campaign_id=campaign_id, status__in=PENDING_STATUSES)
            .values_list("batch", flat=True)
            .distinct()
            .order_by("batch")
        )
    count = 0
    for batch in batches:
        job_enqueue(
            task_name=BATCH_TASK, args=[campaign_id, batch], priority=CAMPAIGN_PRIORITY, requested_by=requested_by
        )
        count += 1
    return count


def campaign_pause(*, campaign: Campaign) -> bool:
    """Running batches stop at their next claim (at most CLAIM_CHUNK more
    messages each). False if the campaign was not running."""
    running = Campaign.objects.filter(pk=campaign.pk, status=CampaignStatus.RUNNING)
    return bool(running.update(status=CampaignStatus.PAUSED))


def campaign_resume(*, campaign: Campaign, requested_by=None) -> bool:
    """Run again, with a job for every batch that has something left to send
    (which also picks up the claims of jobs that died)."""
    with transaction.atomic():
        paused = Campaign.objects.filter(pk=campaign.pk, status=CampaignStatus.PAUSED)
        if not paused.update(status=CampaignStatus.RUNNING):
            return False
        _dispatch(campaign.pk, requested_by=requested_by)
    return True


def campaign_cancel(*, campaign: Campaign) -> bool:
    """Stop for good: unsent messages become CANCELLED. Messages a running
    batch has already claimed (at most CLAIM_CHUNK per batch) still go."""
    now = timezone.now()
    with transaction.atomic():
        cancelled = Campaign.objects.filter(
            pk=campaign.pk, status__in=[CampaignStatus.RUNNING, CampaignStatus.PAUSED]
        ).update(status=CampaignStatus.CANCELLED, finished_at=now)
        if not cancelled:
            return False
        # Claims of jobs that died (expired) too: nobody will finish them.
        OutboundMessage.objects.filter(
            Q(status=MessageStatus.QUEUED) | Q(status=MessageStatus.SENDING, claimed_until__lt=now),
            campaign_id=campaign.pk,
        ).update(
            status=MessageStatus.CANCELLED,
            claimed_by=None,
            claimed_until=None,
            last_error="The campaign was cancelled.",
        )
    return True


def campaign_finish_if_done(campaign_id: int) -> bool:
    """Mark a running campaign DONE once nothing is left to send. Every
    batch asks after its own last write, so the last one to finish sees all."""
    pending = OutboundMessage.objects.filter(campaign_id=OuterRef("pk"), status__in=PENDING_STATUSES)
    return bool(
        Campaign.objects.filter(pk=campaign_id, status=CampaignStatus.RUNNING)
        .exclude(Exists(pending))
        .update(status=CampaignStatus.DONE, finished_at=timezone.now())
    )


def _count(statuses) -> Coalesce:
    matching = (
        OutboundMessage.objects.filter(campaign=OuterRef("pk"), status__in=statuses)
        .order_by()
        .values("campaign")
        .annotate(n=Count("*"))
        .values("n")
    )
    return Coalesce(Subquery(matching, output_field=IntegerField()), Value(0))


def campaigns_with_progress(queryset: QuerySet[Campaign]) -> QuerySet[Campaign]:
    """Each campaign with sent_count, failed_count (failed or bounced),
    pending_count and cancelled_count: one query, counted per listed
    campaign through the (campaign, status) index."""
    return queryset.annotate(
        sent_count=_count([MessageStatus.SENT]),
        failed_count=_count(FAILED_STATUSES),
        pending_count=_count(PENDING_STATUSES),
        cancelled_count=_count([MessageStatus.CANCELLED]),
    )


def campaign_progress(campaign: Campaign) -> dict:
    counted = campaigns_with_progress(Campaign.objects.filter(pk=campaign.pk)).get()
    total = counted.recipients_count
    finished = counted.sent_count + counted.failed_count + counted.cancelled_count
    return {
        "total": total,
        "sent": counted.sent_count,
        "failed": counted.failed_count,
        "pending": counted.pending_count,
        "cancelled": counted.cancelled_count,
        "percent": 100 if total == 0 else finished * 100 // total,
    }


# -- Retrying ---------------------------------------------------------------------


def _why_not_retryable(message: OutboundMessage) -> str | None:
    if message.status not in FAILED_STATUSES:
        return f"it was {message.status}"
    if message.campaign_id and message.campaign.status == CampaignStatus.CANCELLED:
        return "its campaign was cancelled"
    if message.context is None and not (message.body_text or message.body_html):
        return "it failed before it was rendered (send it again from code)"
    return None


def messages_retry(*, messages: Iterable[OutboundMessage], requested_by=None) -> tuple[list[OutboundMessage], Counter]:
    """Queue failed or bounced messages again: transactional ones get a job
    each, campaign ones go back to their batch (one job per batch touched).
    Returns the messages retried and a count of reasons for those skipped.
    Pass messages with their campaign selected (select_related)."""
    retried: list[OutboundMessage] = []
    skipped: Counter[str] = Counter()
    batches: dict[int, set[int]] = defaultdict(set)
    with transaction.atomic():
        for message in messages:
            reason = _why_not_retryable(message)
            if reason is None and not OutboundMessage.objects.filter(pk=message.pk, status__in=FAILED_STATUSES).update(
                status=MessageStatus.QUEUED
            ):
                reason = "it is no longer failed"
            if reason:
                skipped[reason] += 1
                continue
            retried.append(message)
            if message.campaign_id is None:
                job = job_enqueue(
                    task_name=MESSAGE_TASK,
                    args=[message.pk],
                    priority=TRANSACTIONAL_PRIORITY,
                    requested_by=requested_by,
                )
                OutboundMessage.objects.filter(pk=message.pk).update(job=job)
            else:
                batches[message.campaign_id].add(message.batch)
        for campaign_id, numbers in batches.items():
            _reopen_and_dispatch(campaign_id, sorted(numbers), requested_by=requested_by)
    return retried, skipped


def campaign_retry_failed(*, campaign: Campaign, requested_by=None) -> int:
    """Queue every FAILED message of the campaign again, in one UPDATE.
    Bounces are left alone: the server said those addresses do not exist,
    and mailing them again in bulk hurts the sender's reputation; retry one
    by one if you know better."""
    if campaign.status == CampaignStatus.CANCELLED:
        raise BadInput(f"campaign {campaign.name!r} was cancelled; its messages are not sent again")
    with transaction.atomic():
        failed = OutboundMessage.objects.filter(campaign=campaign, status=MessageStatus.FAILED)
        batches = sorted(set(failed.values_list("batch", flat=True)))
        count = failed.update(status=MessageStatus.QUEUED)
        if count:
            _reopen_and_dispatch(campaign.pk, batches, requested_by=requested_by)
    return count


def _reopen_and_dispatch(campaign_id: int, batches: list[int], *, requested_by=None) -> None:
    Campaign.objects.filter(pk=campaign_id, status=CampaignStatus.DONE).update(
        status=CampaignStatus.RUNNING, finished_at=None
    )
    # A paused campaign keeps them queued until it is resumed.
    if Campaign.objects.filter(pk=campaign_id, status=CampaignStatus.RUNNING).exists():
        _dispatch(campaign_id, batches, requested_by=requested_by)
