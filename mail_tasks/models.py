import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q


class MessageStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    # Claimed by a running job (claimed_by) until claimed_until: nobody else
    # sends it meanwhile, and a redelivery of that job takes it back.
    SENDING = "sending", "Sending"
    SENT = "sent", "Sent"
    FAILED = "failed", "Failed"
    BOUNCED = "bounced", "Bounced permanently"
    CANCELLED = "cancelled", "Cancelled"


PENDING_STATUSES = (MessageStatus.QUEUED, MessageStatus.SENDING)
FAILED_STATUSES = (MessageStatus.FAILED, MessageStatus.BOUNCED)


class CampaignStatus(models.TextChoices):
    RUNNING = "running", "Running"
    PAUSED = "paused", "Paused"
    CANCELLED = "cancelled", "Cancelled"
    DONE = "done", "Done"


class Campaign(models.Model):
    """One template sent to many recipients, one OutboundMessage each, split
    into batches of `batch_size` that are one job and one SMTP connection.

    Only the total is stored: sent, failed and pending are counted from the
    messages (services.campaign_progress). A stored counter would be one more
    UPDATE per message, on one row every worker fights over.
    """

    name = models.CharField(max_length=200)
    template = models.CharField(max_length=200, help_text="Folder with subject.txt, body.txt and optionally body.html.")
    context = models.JSONField(default=dict, blank=True, help_text="Shared by every recipient; theirs wins.")
    from_email = models.CharField(max_length=320)
    status = models.CharField(max_length=10, choices=CampaignStatus.choices, default=CampaignStatus.RUNNING)
    recipients_count = models.PositiveIntegerField(default=0)
    batch_size = models.PositiveIntegerField()
    batches = models.PositiveIntegerField(default=0)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        permissions = [("control_campaign", "Can pause, resume and cancel campaigns")]

    def __str__(self) -> str:
        return self.name


class OutboundMessage(models.Model):
    """One email to one recipient, and everything known about sending it."""

    # What makes a second email_send (or a second CSV row) the same message.
    # Unique by a constraint (Meta), not unique=True, which on PostgreSQL
    # adds a second, LIKE-only index that nothing here queries.
    idempotency_key = models.CharField(max_length=200)
    # Generated at creation and sent with every attempt, so a duplicate that
    # slips through a crash carries the same Message-ID and clients fold it.
    message_id = models.CharField(max_length=255)
    # Indexed by mail_msg_campaign_batch, which starts with it.
    campaign = models.ForeignKey(
        Campaign, null=True, blank=True, on_delete=models.CASCADE, related_name="messages", db_index=False
    )
    batch = models.PositiveIntegerField(null=True, blank=True)
    from_email = models.CharField(max_length=320)
    to = models.CharField(max_length=320)
    template = models.CharField(max_length=200, blank=True)
    # Campaign messages are rendered by the worker from the template and this
    # context (JSON); transactional ones are rendered by email_send, so their
    # context may hold any object, and is not kept.
    context = models.JSONField(null=True, blank=True)
    subject = models.CharField(max_length=998, blank=True)
    body_text = models.TextField(blank=True)
    body_html = models.TextField(blank=True)
    status = models.CharField(max_length=10, choices=MessageStatus.choices, default=MessageStatus.QUEUED)
    attempts = models.PositiveIntegerField(default=0, help_text="SMTP attempts whose outcome was recorded.")
    last_error = models.TextField(blank=True)
    smtp_response = models.TextField(blank=True, help_text="The server's last answer, e.g. 250 2.0.0 queued as ...")
    claimed_by = models.UUIDField(null=True, blank=True, help_text="The job sending it now.")
    claimed_until = models.DateTimeField(null=True, blank=True)
    # Indexed only where set (Meta): campaign messages have no job of their own.
    job = models.ForeignKey(
        "jobs.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_index=False
    )
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        # Newest first by id, the primary key's index: every status change
        # rewrites each index of the row (twice per message: claimed, then
        # sent), so there is none on created_at, and none twice.
        ordering = ["-id"]
        indexes = [
            # Deleting jobs sets their messages' job to NULL.
            models.Index(fields=["job"], condition=Q(job__isnull=False), name="mail_msg_job"),
            # A batch job walks its batch in id order.
            models.Index(fields=["campaign", "batch", "id"], name="mail_msg_campaign_batch"),
            # Campaign progress: a count per status.
            models.Index(fields=["campaign", "status"], name="mail_msg_campaign_status"),
        ]
        constraints = [
            models.UniqueConstraint(fields=["idempotency_key"], name="mail_msg_idempotency_key_unique"),
            models.UniqueConstraint(fields=["message_id"], name="mail_msg_message_id_unique"),
            models.CheckConstraint(
                condition=Q(status=MessageStatus.SENDING, claimed_by__isnull=False) | ~Q(status=MessageStatus.SENDING),
                name="mail_msg_sending_is_claimed",
            ),
        ]
        permissions = [("retry_outboundmessage", "Can retry failed messages")]

    def __str__(self) -> str:
        return f"{self.to}: {self.subject or self.template}"


def attachment_path(instance, filename: str) -> str:
    # MEDIA_ROOT may be served to anyone (`make run` does): a stored name
    # nobody can guess keeps an emailed report private. The file name the
    # recipient sees is `filename`.
    return f"mail/attachments/{uuid.uuid4().hex}"


class OutboundAttachment(models.Model):
    message = models.ForeignKey(OutboundMessage, on_delete=models.CASCADE, related_name="attachments")
    file = models.FileField(upload_to=attachment_path)
    filename = models.CharField(max_length=255)
    mimetype = models.CharField(max_length=100, blank=True)

    def __str__(self) -> str:
        return self.filename


class RateBucket(models.Model):
    """Shared state of one rate limit ("*" for all mail, or a domain), as a
    GCRA: `tat` is the theoretical arrival time, in Unix seconds, of the next
    message that would conform. See mail_tasks/ratelimit.py."""

    key = models.CharField(max_length=255, primary_key=True)
    tat = models.FloatField(default=0)

    def __str__(self) -> str:
        return self.key


class ReceivedEmail(models.Model):
    """What the local sink (`manage.py smtp_sink`) received."""

    received_at = models.DateTimeField(auto_now_add=True, db_index=True)
    peer = models.CharField(max_length=100, blank=True)
    mail_from = models.CharField(max_length=320)
    rcpt_to = models.JSONField(default=list)
    subject = models.CharField(max_length=998, blank=True)
    message_id = models.CharField(max_length=255, blank=True, db_index=True)
    raw = models.BinaryField()

    class Meta:
        ordering = ["-received_at", "-id"]

    def __str__(self) -> str:
        return f"{self.subject} ({', '.join(self.rcpt_to)})"
