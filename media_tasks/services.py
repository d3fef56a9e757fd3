"""Image operations: upload (store the original, enqueue its job), validate,
make renditions, and summarise a batch. Typed, keyword-only, testable
without a broker; the Pillow work itself is in media_tasks.imaging."""

import hashlib
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files import File
from django.core.files.base import ContentFile
from django.core.files.storage import Storage
from django.db import transaction
from django.db.models.fields.files import FieldFile
from django.utils import timezone
from PIL import Image as PILImage

from jobs.exceptions import BadInput, TransientError
from jobs.models import FINISHED_STATUSES, Job, JobStatus
from jobs.services import job_enqueue
from media_tasks import imaging
from media_tasks.conf import Options, rendition_specs
from media_tasks.models import Image, ImageBatch, Rendition, media_storage

RENDITIONS_TASK = "media_tasks.renditions_create"

Progress = Callable[[int, str], None]


def _no_progress(percent: int, message: str = "") -> None:
    pass


def original_path(image_id: uuid.UUID) -> str:
    # Two hex characters of fan-out keep any one directory small.
    return f"originals/{image_id.hex[:2]}/{image_id.hex}"


def rendition_path(*, image_id: uuid.UUID, name: str, extension: str, data: bytes) -> str:
    """Named by content: a re-run that makes the same bytes finds the same
    name (and the file already there), a changed rendition gets a new name,
    so the rows can switch from the old set to the new one in a single
    transaction and no file is ever overwritten in place."""
    digest = hashlib.sha256(data).hexdigest()[:16]
    return f"renditions/{image_id.hex[:2]}/{image_id.hex}/{name}-{digest}.{extension}"


def display_name(name: str | None) -> str:
    """The client's file name, for people only: the last path component,
    without control characters (NUL included), at most 255 characters."""
    name = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    return "".join(char for char in name if char.isprintable())[:255]


def image_validate(
    *, data: bytes, allowed_formats: Sequence[str] | None = None, max_pixels: int | None = None
) -> imaging.ImageInfo:
    """What the image is, read from its content and header alone (no pixel is
    decoded). BadInput when the format is not allowed, the header is
    unreadable, or it declares more than `max_pixels`."""
    allowed = list(allowed_formats or settings.MEDIA_TASKS_ALLOWED_FORMATS)
    with imaging.open_image(
        data, allowed_formats=allowed, max_pixels=max_pixels or settings.MEDIA_TASKS_MAX_PIXELS
    ) as image:
        return imaging.describe(image)


def image_header_check(*, file: File) -> imaging.ImageInfo:
    """What the header tells cheaply, checked where a person uploads (the
    API and the admin answer with it at once instead of a job failing
    later): an allowed format, within the pixel limit, a header that
    parses. BadInput naming the file otherwise. No pixel is decoded: a file
    corrupt further in still fails its job, in the worker."""
    name = display_name(file.name) or "the file"
    limit = settings.MEDIA_TASKS_MAX_UPLOAD_BYTES
    if file.size > limit:
        raise BadInput(f"{name} is {file.size:,} bytes; the limit is {limit:,}")
    file.seek(0)
    data = file.read()
    file.seek(0)
    try:
        return image_validate(data=data)
    except BadInput as exc:
        raise BadInput(f"{name}: {exc}") from None


ORIGINAL = "original"


@dataclass(frozen=True)
class ServedFile:
    field: FieldFile
    content_type: str
    download_name: str


def image_file(*, image: Image, name: str) -> ServedFile:
    """The file of an image a download view sends: its original (`name`
    "original") or the rendition of that name. BadInput if there is none.
    Who may see it is the caller's check."""
    stem = Path(image.original_name or str(image.id)).stem or str(image.id)
    if name == ORIGINAL:
        return ServedFile(image.original, "application/octet-stream", image.original_name or str(image.id))
    rendition = image.renditions.filter(name=name).first()
    if rendition is None:
        raise BadInput(f"image {image.id} has no rendition named {name!r}")
    extension = imaging.OUTPUT_FORMATS[rendition.format]
    # JPEG -> image/jpeg, WEBP -> image/webp
    return ServedFile(rendition.file, f"image/{rendition.format.lower()}", f"{stem}-{rendition.name}.{extension}")


def images_follow_jobs(jobs: Sequence[Job]) -> None:
    """The renditions task's on_created hook: an image's status is its newest
    job's, whoever creates that job (an upload, the admin's regenerate, a
    retry or requeue in the job core, which knows nothing about images)."""
    for job in jobs:
        try:
            Image.objects.filter(pk=job.args[0]).update(job=job)
        except (IndexError, ValidationError):  # stored arguments that are not an image id
            pass


def renditions_enqueue(*, image: Image, requested_by=None) -> Job:
    """Ask for the image's renditions. While a job for this image is active,
    that job is returned instead of a second one. The image row follows the
    new job (images_follow_jobs)."""
    image.job = job_enqueue(
        task_name=RENDITIONS_TASK,
        args=[str(image.id)],
        requested_by=requested_by,
        unique_key=f"{RENDITIONS_TASK}:{image.id}",
    )
    return image.job


def image_upload(
    *, file: File, options: Options | None = None, requested_by=None, batch: ImageBatch | None = None
) -> Image:
    """Store the original under a generated name and enqueue its renditions,
    in the caller's transaction: the job is published once that commits.
    Nothing here parses the file; the worker does, under its time limits."""
    limit = settings.MEDIA_TASKS_MAX_UPLOAD_BYTES
    if file.size > limit:
        raise BadInput(f"{display_name(file.name) or 'the file'} is {file.size:,} bytes; the limit is {limit:,}")
    image = Image(
        id=uuid.uuid4(),
        original_name=display_name(file.name),
        original_bytes=file.size,
        options=(options or Options()).to_json(),
        batch=batch,
        requested_by=requested_by,
    )
    storage = media_storage()
    image.original.name = storage.save(original_path(image.id), file)
    try:
        with transaction.atomic():
            renditions_enqueue(image=image, requested_by=requested_by)
            image.save(force_insert=True)
    except BaseException:
        storage.delete(image.original.name)
        raise
    return image


def batch_upload(*, files: Sequence[File], options: Options | None = None, requested_by=None) -> ImageBatch:
    """Many images, one job each (they spread over every worker), followed as
    one batch. All or nothing: a failure stores none of them."""
    if not files:
        raise BadInput("a batch needs at least one file")
    if len(files) > settings.MEDIA_TASKS_MAX_BATCH_FILES:
        raise BadInput(f"{len(files)} files; a batch takes at most {settings.MEDIA_TASKS_MAX_BATCH_FILES}")
    created: list[Image] = []
    try:
        with transaction.atomic():
            batch = ImageBatch.objects.create(requested_by=requested_by)
            for file in files:
                created.append(image_upload(file=file, options=options, requested_by=requested_by, batch=batch))
    except BaseException:
        _delete_files(media_storage(), {image.original.name for image in created})
        raise
    return batch


def _read_original(image: Image, storage: Storage) -> bytes:
    # Bounded by MEDIA_TASKS_MAX_UPLOAD_BYTES; Pillow reads from memory.
    try:
        with storage.open(image.original.name, "rb") as original:
            return original.read()
    except FileNotFoundError:
        raise BadInput(f"the original of image {image.id} is missing from storage") from None
    except OSError as exc:
        raise TransientError(f"cannot read the original of image {image.id}: {exc}") from exc


def _store(storage: Storage, name: str, data: bytes) -> str:
    try:
        if storage.exists(name):
            # Same name, same content: keep it, unless a crashed run left it
            # half written.
            if storage.size(name) == len(data):
                return name
            storage.delete(name)
        saved = storage.save(name, ContentFile(data))
    except OSError as exc:
        raise TransientError(f"cannot store {name}: {exc}") from exc
    if saved != name:  # another run wrote it between exists() and save()
        storage.delete(saved)
        raise TransientError(f"{name} was being written by another run")
    return saved


def _delete_files(storage: Storage, names: set[str]) -> None:
    for name in names:
        storage.delete(name)


def _watermark_image(options: Options) -> PILImage.Image | None:
    if not (options.watermark and options.watermark.image):
        return None
    path = settings.MEDIA_TASKS_WATERMARKS[options.watermark.image]
    with PILImage.open(path, formats=list(settings.MEDIA_TASKS_ALLOWED_FORMATS)) as mark:  # the operator's file
        mark.load()
        return mark.copy()


def renditions_create(*, image: Image, progress: Progress = _no_progress) -> list[Rendition]:
    """Make every rendition of `image` and replace its set in one transaction.

    Idempotent: running it again makes the same files under the same names
    and leaves exactly one set. Files are written before the rows switch to
    them, so a crash at any point leaves the previous complete set in place.
    BadInput for anything wrong with the image; TransientError for storage.
    """
    options = Options.from_json(image.options)
    storage = media_storage()
    data = _read_original(image, storage)
    progress(10, "decoding")
    info, outputs = imaging.renditions_render(
        data,
        specs=rendition_specs(),
        options=options,
        allowed_formats=list(settings.MEDIA_TASKS_ALLOWED_FORMATS),
        max_pixels=settings.MEDIA_TASKS_MAX_PIXELS,
        background=settings.MEDIA_TASKS_BACKGROUND,
        mark_image=_watermark_image(options),
    )
    progress(70, "storing renditions")
    names = {
        out.name: _store(
            storage, rendition_path(image_id=image.id, name=out.name, extension=out.extension, data=out.data), out.data
        )
        for out in outputs
    }
    now = timezone.now()
    rows = [
        Rendition(
            image=image,
            name=out.name,
            file=names[out.name],
            format=out.format,
            width=out.width,
            height=out.height,
            bytes=len(out.data),
            made_at=now,
        )
        for out in outputs
    ]
    with transaction.atomic():
        # The UPDATE locks the image row until commit: two runs for one image
        # (a retry racing a redelivery) switch their sets one after the other.
        exists = Image.objects.filter(pk=image.pk).update(format=info.format, width=info.width, height=info.height)
        if exists:
            _rows_replace(image=image, rows=rows, storage=storage)
    if not exists:
        _delete_files(storage, set(names.values()))
        raise BadInput(f"image {image.id} was deleted while its renditions were made")
    image.format, image.width, image.height = info.format, info.width, info.height
    return rows


def _rows_replace(*, image: Image, rows: list[Rendition], storage: Storage) -> None:
    """Inside the caller's transaction: the image's renditions become `rows`;
    files no row points at any more are deleted once that commits."""
    new_files = {row.file.name for row in rows}
    old_files = set(Rendition.objects.filter(image=image).values_list("file", flat=True))
    Rendition.objects.bulk_create(
        rows,
        update_conflicts=True,
        unique_fields=["image", "name"],
        update_fields=["file", "format", "width", "height", "bytes", "made_at"],
    )
    Rendition.objects.filter(image=image).exclude(name__in=[row.name for row in rows]).delete()
    transaction.on_commit(partial(_delete_files, storage, old_files - new_files))


def batch_status(counts: Counter) -> str:
    """One word for a batch from its images' job statuses: PENDING until one
    starts, STARTED until all finish, then SUCCESS, FAILURE (none made it) or
    PARTIAL."""
    total = sum(counts.values())
    finished = sum(counts[status] for status in FINISHED_STATUSES)
    if finished < total:
        waiting = counts[JobStatus.PENDING] + counts[JobStatus.QUEUED]
        return JobStatus.PENDING.value if waiting == total else JobStatus.STARTED.value
    if counts[JobStatus.SUCCESS] == total:
        return JobStatus.SUCCESS.value
    return JobStatus.FAILURE.value if counts[JobStatus.SUCCESS] == 0 else "PARTIAL"


def batch_summary(*, batch: ImageBatch) -> dict:
    """Status, progress and counts of a batch, from one query."""
    rows = list(batch.images.values_list("job__status", "job__progress"))
    counts = Counter(status or JobStatus.PENDING.value for status, _ in rows)
    finished = sum(counts[status] for status in FINISHED_STATUSES)
    # A finished job is done whether it worked or not.
    done = sum(100 if status in FINISHED_STATUSES else (percent or 0) for status, percent in rows)
    return {
        "status": batch_status(counts),
        "progress": {
            "percent": round(done / len(rows)) if rows else 100,
            "message": f"{finished} of {len(rows)} images finished",
        },
        "counts": dict(sorted(counts.items())),
        "total": len(rows),
    }
