import uuid

from django.conf import settings
from django.core.files.storage import storages
from django.db import models


def media_storage():
    """The storage originals and renditions go to: a key of STORAGES
    (settings.MEDIA_TASKS_STORAGE), the local MEDIA_ROOT by default."""
    return storages[settings.MEDIA_TASKS_STORAGE]


class ImageBatch(models.Model):
    """Images uploaded together, followed as one: one job per image, one
    status for the batch (media_tasks.services.batch_summary)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "image batches"

    def __str__(self) -> str:
        return f"batch {self.id}"


class Image(models.Model):
    """An uploaded original. Its status is its job's: `job` is the newest job
    for it (a retry or re-run points it at the new one, media_tasks.services.images_follow_jobs)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # Stored under a generated name (services.original_path): what the client
    # called the file never reaches a file system.
    original = models.FileField(storage=media_storage, max_length=255)
    original_name = models.CharField(max_length=255, blank=True, help_text="As uploaded; shown, never used as a path.")
    original_bytes = models.PositiveBigIntegerField(default=0)
    # What was asked (media_tasks.conf.Options): replayed by retries.
    options = models.JSONField(default=dict, blank=True)
    batch = models.ForeignKey(ImageBatch, null=True, blank=True, on_delete=models.CASCADE, related_name="images")
    job = models.ForeignKey("jobs.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # Read from the content by the job, after EXIF orientation.
    format = models.CharField(max_length=10, blank=True)
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.original_name or str(self.id)


class Rendition(models.Model):
    """One stored output of an image. At most one per (image, name): a re-run
    replaces the set in one transaction instead of adding to it."""

    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="renditions")
    name = models.CharField(max_length=50)
    file = models.FileField(storage=media_storage, max_length=255)
    format = models.CharField(max_length=10)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    bytes = models.PositiveIntegerField()
    made_at = models.DateTimeField()

    class Meta:
        ordering = ["image", "-width"]
        constraints = [models.UniqueConstraint(fields=["image", "name"], name="rendition_one_per_name")]

    def __str__(self) -> str:
        return f"{self.name} {self.width}x{self.height} {self.format}"
