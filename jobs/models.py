import uuid
from datetime import timedelta

from django.conf import settings
from django.db import models
from django.db.models import Q

from jobs.queues import Priority, Queue


class JobStatus(models.TextChoices):
    PENDING = "PENDING", "Pending (committed, not yet on the broker)"
    QUEUED = "QUEUED", "Queued"
    STARTED = "STARTED", "Started"
    RETRYING = "RETRYING", "Retrying"
    SUCCESS = "SUCCESS", "Success"
    FAILURE = "FAILURE", "Failure"
    REVOKED = "REVOKED", "Cancelled"
    DEAD = "DEAD", "Dead (exceeded its delivery limit)"
    LOST = "LOST", "Lost (its worker vanished)"


ACTIVE_STATUSES = (JobStatus.PENDING, JobStatus.QUEUED, JobStatus.STARTED, JobStatus.RETRYING)
FINISHED_STATUSES = (
    JobStatus.SUCCESS,
    JobStatus.FAILURE,
    JobStatus.REVOKED,
    JobStatus.DEAD,
    JobStatus.LOST,
)
# What a person may retry: everything that ended without success.
RETRYABLE_STATUSES = (JobStatus.FAILURE, JobStatus.REVOKED, JobStatus.DEAD, JobStatus.LOST)
# What may still be stopped before or while it runs.
CANCELLABLE_STATUSES = ACTIVE_STATUSES


class Job(models.Model):
    """One unit of background work, created in the caller's transaction.

    Its id is the Celery task id. The result and traceback live in
    django-celery-results' TaskResult (see `task_result`); this row keeps what
    that table cannot: the canonical JSON arguments (what a retry replays),
    routing, attempts, progress, who asked and what it retries.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    task_name = models.CharField(max_length=200, db_index=True)
    args = models.JSONField(default=list, blank=True)
    kwargs = models.JSONField(default=dict, blank=True)
    queue = models.CharField(max_length=50, choices=[(q.value, q.value) for q in Queue])
    priority = models.CharField(
        max_length=10,
        choices=[(p.value, p.value) for p in Priority],
        default=Priority.MEDIUM.value,
    )
    status = models.CharField(max_length=10, choices=JobStatus.choices, default=JobStatus.PENDING)
    # Times the task body started (every delivery and every retry).
    attempts = models.PositiveIntegerField(default=0)
    # Starts since the last clean retry: a count above MAX_DELIVERIES means
    # the worker died every time (poison message) and the job goes DEAD.
    deliveries = models.PositiveSmallIntegerField(default=0)
    progress = models.PositiveSmallIntegerField(default=0, help_text="Percent done, 0-100.")
    progress_message = models.CharField(max_length=200, blank=True)
    error = models.TextField(blank=True, help_text="Why it failed, in one line.")
    # NULL, not "", for "no key": the unique constraint on active keys must
    # ignore jobs without one.
    unique_key = models.CharField(  # noqa: DJ001
        max_length=200,
        null=True,
        blank=True,
        help_text="While a job with this key is active, enqueueing the same key returns it.",
    )
    eta = models.DateTimeField(null=True, blank=True, help_text="Not to start before.")
    worker = models.CharField(max_length=200, blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    retry_of = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="retries",
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    queued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    resolved_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When a person discarded this failure: it leaves the default failure views.",
    )

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            # The relay's scan and the admin's status filter.
            models.Index(fields=["status", "created_at"], name="job_status_created"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["unique_key"],
                condition=Q(status__in=ACTIVE_STATUSES) & Q(unique_key__isnull=False),
                name="job_unique_key_while_active",
            ),
            models.CheckConstraint(condition=Q(progress__lte=100), name="job_progress_percent"),
        ]
        permissions = [
            ("retry_job", "Can retry jobs"),
            ("cancel_job", "Can cancel jobs"),
        ]

    def __str__(self) -> str:
        return f"{self.task_name} [{self.id}]"

    @property
    def runtime(self) -> timedelta | None:
        if self.started_at and self.finished_at:
            return self.finished_at - self.started_at
        return None

    @property
    def wait(self) -> timedelta | None:
        """Time spent on the broker before a worker took it."""
        if self.queued_at and self.started_at:
            return self.started_at - self.queued_at
        return None

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED_STATUSES

    @property
    def task_result(self):
        """django-celery-results' row for this job, or None before it ran."""
        from django_celery_results.models import TaskResult

        return TaskResult.objects.filter(task_id=str(self.id)).first()
