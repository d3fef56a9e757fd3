"""Images through the API and a real worker on RabbitMQ and PostgreSQL."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import transaction
from PIL import Image as PILImage

from jobs.models import Job, JobStatus
from jobs.services import job_retry
from media_tasks import services
from media_tasks.models import Image, Rendition
from tests.helpers import wait_for
from tests.media_tasks import samples
from tests.media_tasks.conftest import stored_files

pytestmark = pytest.mark.integration


def finished(image: Image, timeout: float = 60) -> Job:
    def done():
        image.refresh_from_db()
        return image.job.is_finished if image.job else False

    wait_for(done, timeout=timeout, what=f"the job of image {image.original_name} to finish")
    return image.job


def upload(client, data: bytes, name: str) -> Image:
    response = client.post("/api/images/", {"file": SimpleUploadedFile(name, data)})
    assert response.status_code == 202, response.content
    return Image.objects.get(pk=response.json()["id"])


@pytest.fixture
def photo() -> bytes:
    """A 2400x1800 photo stored sideways (EXIF orientation 6)."""
    upright = PILImage.effect_noise((2400, 1800), 30).convert("RGB")
    return samples.encoded(upright.transpose(PILImage.Transpose.ROTATE_90), exif=_orientation(6))


def _orientation(value: int) -> PILImage.Exif:
    exif = PILImage.Exif()
    exif[0x0112] = value
    return exif


def test_an_uploaded_photo_gets_its_renditions_as_stored_files(start_worker, admin_client, photo, media_root):
    start_worker(queues="images")
    image = upload(admin_client, photo, "photo.jpg")

    job = finished(image)

    assert (job.status, job.attempts, job.progress, job.queue) == (JobStatus.SUCCESS, 1, 100, "images")
    assert (image.format, image.width, image.height) == ("JPEG", 2400, 1800)
    body = admin_client.get(f"/api/images/{image.id}/").json()
    assert body["status"] == "SUCCESS"
    sizes = {r["name"]: (r["width"], r["height"]) for r in body["renditions"]}
    assert sizes == {"thumb": (150, 150), "medium": (800, 600), "large": (1600, 1200)}
    for rendition in Rendition.objects.filter(image=image):
        stored = samples.decoded((media_root / rendition.file.name).read_bytes())
        assert stored.size == (rendition.width, rendition.height)
        assert (media_root / rendition.file.name).stat().st_size == rendition.bytes


def test_hostile_files_fail_their_own_jobs_while_a_good_one_succeeds(start_worker, admin_client, testdata, photo):
    worker = start_worker(queues="images")
    flower = (testdata / "flower.jpg").read_bytes()
    files = {
        "bomb.gif": (testdata / "decompression_bomb.gif").read_bytes(),
        "huge.png": samples.png_declaring(20000, 20000),
        "photoshop.jpg": (testdata / "hopper.psd").read_bytes(),
        "postscript.jpg": (testdata / "pil_sample_cmyk.eps").read_bytes(),
        "broken.png": (testdata / "broken.png").read_bytes(),
        "truncated.jpg": flower[: len(flower) // 2],
        "good.jpg": photo,
    }
    # From code (the API refuses what the header tells at upload, see
    # test_hostile_uploads.py): the worker must refuse them all the same.
    with transaction.atomic():
        batch = services.batch_upload(files=[SimpleUploadedFile(name, data) for name, data in files.items()])
    images = {image.original_name: image for image in Image.objects.all()}

    jobs = {name: finished(image) for name, image in images.items()}

    expected_errors = {
        "bomb.gif": "BadInput: image too large",
        "huge.png": "BadInput: image too large",
        "photoshop.jpg": "BadInput: Photoshop (PSD) files are not accepted",
        "postscript.jpg": "BadInput: PostScript (EPS) files are not accepted",
        "broken.png": "BadInput: the file looks like PNG but is corrupt or truncated",
        "truncated.jpg": "BadInput: the image is corrupt or truncated",
    }
    for name, start in expected_errors.items():
        assert (jobs[name].status, jobs[name].attempts) == (JobStatus.FAILURE, 1), name
        assert jobs[name].error.startswith(start), (name, jobs[name].error)
    assert jobs["good.jpg"].status == JobStatus.SUCCESS
    assert set(Rendition.objects.values_list("image__original_name", flat=True)) == {"good.jpg"}
    assert worker.process.poll() is None
    batch = admin_client.get(f"/api/images/batches/{batch.pk}/").json()
    assert (batch["status"], batch["progress"]["percent"], batch["counts"]) == (
        "PARTIAL",
        100,
        {"FAILURE": 6, "SUCCESS": 1},
    )


def test_a_retried_job_replaces_the_set_instead_of_adding_one(start_worker, admin_client, photo, media_root):
    start_worker(queues="images")
    image = upload(admin_client, photo, "photo.jpg")
    first = finished(image)
    made = set(Rendition.objects.values_list("name", "file"))
    files = stored_files(media_root)

    # The worker did the work and vanished before acknowledging: LOST, and
    # a person retries it.
    Job.objects.filter(pk=first.pk).update(status=JobStatus.LOST)
    first.refresh_from_db()
    retried = job_retry(job=first)
    image.refresh_from_db()
    assert image.job == retried  # the image follows its newest job at once
    second = finished(image)

    assert (second.pk, second.status, second.retry_of_id) == (retried.pk, JobStatus.SUCCESS, first.pk)
    assert set(Rendition.objects.values_list("name", "file")) == made
    assert Rendition.objects.count() == 3
    assert stored_files(media_root) == files
