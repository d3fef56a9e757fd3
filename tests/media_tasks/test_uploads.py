"""image_upload and batch_upload: what is stored, under which name, and
what is enqueued; and how a batch sums up its images' jobs."""

from collections import Counter

import pytest
from django.core.files.base import ContentFile

from jobs.exceptions import BadInput
from jobs.models import Job, JobStatus
from jobs.services import job_retry
from media_tasks import services
from media_tasks.conf import Options
from media_tasks.models import Image, ImageBatch
from tests.media_tasks.conftest import stored_files

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("name", ["../../x.jpg", "a\x00b.jpg", "..\\..\\evil.jpg", "/etc/passwd"])
def test_upload_names_never_reach_the_file_system(media_root, testdata, name):
    image = services.image_upload(file=ContentFile((testdata / "hopper.jpg").read_bytes(), name=name))

    assert image.original.name == f"originals/{image.id.hex[:2]}/{image.id.hex}"
    assert stored_files(media_root) == {image.original.name}
    assert not any(char in image.original_name for char in "/\\\x00")
    assert image.original_name.endswith(("x.jpg", "ab.jpg", "evil.jpg", "passwd"))


def test_an_upload_stores_the_original_and_enqueues_one_job_with_its_options(testdata, admin_user):
    data = (testdata / "hopper.jpg").read_bytes()
    options = Options(format="WEBP", quality=60)
    image = services.image_upload(file=ContentFile(data, name="hopper.jpg"), options=options, requested_by=admin_user)

    job = Job.objects.get()
    assert image.job == job
    assert (job.task_name, job.args, job.queue, job.requested_by) == (
        "media_tasks.renditions_create",
        [str(image.id)],
        "images",
        admin_user,
    )
    assert image.original.read() == data and image.original_bytes == len(data)
    assert Options.from_json(Image.objects.get().options) == options


def test_an_upload_over_the_size_limit_is_refused_and_not_stored(settings, media_root):
    settings.MEDIA_TASKS_MAX_UPLOAD_BYTES = 10
    with pytest.raises(BadInput, match="is 11 bytes; the limit is 10"):
        services.image_upload(file=ContentFile(b"x" * 11, name="big.jpg"))
    assert not stored_files(media_root) and not Image.objects.exists()


def test_asking_again_while_a_job_is_active_returns_that_job(testdata):
    image = services.image_upload(file=ContentFile((testdata / "hopper.jpg").read_bytes(), name="a.jpg"))
    assert services.renditions_enqueue(image=image) == image.job
    assert Job.objects.count() == 1


def test_an_image_follows_a_retry_made_by_the_job_core(testdata):
    image = services.image_upload(file=ContentFile((testdata / "hopper.jpg").read_bytes(), name="a.jpg"))
    Job.objects.filter(pk=image.job_id).update(status=JobStatus.FAILURE)

    retried = job_retry(job=Job.objects.get(pk=image.job_id))

    image.refresh_from_db()
    assert image.job == retried


def test_a_batch_uploads_every_file_with_one_job_each(testdata):
    files = [
        ContentFile((testdata / name).read_bytes(), name=name) for name in ("hopper.jpg", "hopper.png", "flower.jpg")
    ]
    batch = services.batch_upload(files=files)

    assert sorted(image.original_name for image in batch.images.all()) == ["flower.jpg", "hopper.jpg", "hopper.png"]
    assert Job.objects.filter(task_name="media_tasks.renditions_create").count() == 3


def test_a_failing_batch_stores_nothing(settings, testdata, media_root):
    settings.MEDIA_TASKS_MAX_UPLOAD_BYTES = 10_000
    files = [
        ContentFile((testdata / "hopper.jpg").read_bytes(), name="ok.jpg"),
        ContentFile(b"x" * 10_001, name="big.jpg"),
    ]
    with pytest.raises(BadInput, match="big.jpg"):
        services.batch_upload(files=files)
    assert not stored_files(media_root)
    assert not (Image.objects.exists() or ImageBatch.objects.exists() or Job.objects.exists())


def test_a_batch_has_a_file_count_limit(settings):
    settings.MEDIA_TASKS_MAX_BATCH_FILES = 2
    with pytest.raises(BadInput, match="3 files; a batch takes at most 2"):
        services.batch_upload(files=[ContentFile(b"x", name=f"{n}.jpg") for n in range(3)])
    with pytest.raises(BadInput, match="at least one"):
        services.batch_upload(files=[])


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        (["PENDING", "QUEUED"], "PENDING"),
        (["QUEUED", "STARTED"], "STARTED"),
        (["SUCCESS", "QUEUED"], "STARTED"),
        (["SUCCESS", "SUCCESS"], "SUCCESS"),
        (["FAILURE", "DEAD"], "FAILURE"),
        (["SUCCESS", "FAILURE"], "PARTIAL"),
    ],
)
def test_a_batch_status_sums_up_its_jobs(statuses, expected):
    assert services.batch_status(Counter(statuses)) == expected


def test_a_batch_summary_counts_and_averages_progress(testdata):
    files = [ContentFile((testdata / "hopper.jpg").read_bytes(), name=f"{n}.jpg") for n in range(4)]
    batch = services.batch_upload(files=files)
    jobs = [image.job for image in batch.images.order_by("created_at")]
    Job.objects.filter(pk=jobs[0].pk).update(status=JobStatus.SUCCESS, progress=100)
    Job.objects.filter(pk=jobs[1].pk).update(status=JobStatus.FAILURE, progress=10)
    Job.objects.filter(pk=jobs[2].pk).update(status=JobStatus.STARTED, progress=50)

    summary = services.batch_summary(batch=batch)

    assert summary["status"] == "STARTED"
    assert summary["counts"] == {"FAILURE": 1, "PENDING": 1, "STARTED": 1, "SUCCESS": 1}
    assert summary["progress"] == {"percent": 62, "message": "2 of 4 images finished"}
