import os
import uuid

from django.conf import settings
from django.core.files.storage import FileSystemStorage, storages
from django.db import models
from django.utils import timezone

from jobs.models import JobStatus


class PrivateReportStorage(FileSystemStorage):
    """Files under settings.REPORTS_ROOT, read when used (so a changed setting
    is followed, as MEDIA_ROOT is). No URL: files are only served by the
    download view, which checks who asks."""

    @property
    def base_location(self) -> str:
        return str(settings.REPORTS_ROOT)

    @property
    def location(self) -> str:
        return os.path.abspath(self.base_location)

    def url(self, name):
        raise ValueError("Report files have no public URL; use the run's download view.")


def report_storage():
    """Where report files go: settings.REPORTS_ROOT on the local file system,
    or the STORAGES entry named by settings.REPORTS_STORAGE (a private
    bucket, say). Never MEDIA_ROOT: a web server may serve that to anyone,
    and a report is only for its owner."""
    if settings.REPORTS_STORAGE:
        return storages[settings.REPORTS_STORAGE]
    return PrivateReportStorage()


class ReportFormat(models.TextChoices):
    CSV = "csv", "CSV"
    XLSX = "xlsx", "Excel (XLSX)"
    PDF = "pdf", "PDF"


class ReportRun(models.Model):
    """One asked-for report and its file. Its status is its job's: `job` is
    the newest job generating it (a retry points it at the new one,
    reports.services.runs_follow_jobs). Generating again replaces the file: one per run."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    report_type = models.CharField(max_length=100, db_index=True, help_text="A name in reports.registry.")
    # Cleaned and resolved ("last 7 days" became dates): what a retry replays.
    params = models.JSONField(default=dict, blank=True)
    format = models.CharField(max_length=4, choices=ReportFormat.choices)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    email_to = models.JSONField(default=list, blank=True, help_text="Addresses sent the file once it is ready.")
    # A server-made name inside the storage (services.report_file_name);
    # nothing a client sent is part of it.
    file = models.FileField(storage=report_storage, max_length=255, blank=True)
    rows = models.PositiveBigIntegerField(null=True, blank=True)
    size = models.PositiveBigIntegerField(null=True, blank=True, help_text="Bytes.")
    job = models.ForeignKey("jobs.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # A scheduled run's key (the beat job's id): a redelivered schedule
    # message finds the run it already made instead of making a second.
    idempotency_key = models.CharField(max_length=200, null=True, blank=True, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    generated_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["owner", "-created_at"], name="reportrun_owner_created")]

    def __str__(self) -> str:
        return f"{self.report_type} ({self.format}) {str(self.id)[:8]}"

    @property
    def status(self) -> str:
        if self.job_id:
            return self.job.status
        # The job row was pruned (JOBS_RETENTION_DAYS): the file says how it ended.
        return JobStatus.SUCCESS.value if self.generated_at else JobStatus.PENDING.value

    @property
    def is_expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()

    @property
    def is_ready(self) -> bool:
        return bool(self.file) and self.generated_at is not None and not self.is_expired

    @property
    def download_name(self) -> str:
        """What the browser saves it as; the stored name stays the server's."""
        stamp = (self.generated_at or self.created_at or timezone.now()).strftime("%Y%m%d-%H%M")
        return f"{self.report_type.replace('.', '-')}-{stamp}.{self.format}"
