"""An image points at its newest renditions job however that job is made:
one at a time, many at once (bulk inserts send no post_save signal, so the
link is the task's declared on_created hook), or a retry from the job core."""

from PIL import Image as PILImage

from jobs.models import Job, JobStatus
from jobs.services import job_enqueue_many, jobs_retry_many
from media_tasks.models import Image
from media_tasks.services import RENDITIONS_TASK
from tests.media_tasks import samples


def test_bulk_enqueued_and_bulk_retried_renditions_jobs_are_followed_by_their_images(upload):
    images = [upload(samples.encoded(PILImage.new("RGB", (40, 30)))) for _ in range(3)]
    first_jobs = {image.pk: image.job_id for image in images}

    again = job_enqueue_many(task_name=RENDITIONS_TASK, calls=[((str(image.id),), {}) for image in images])
    assert {image.pk: image.job_id for image in Image.objects.all()} == {
        image.pk: job.pk for image, job in zip(images, again, strict=True)
    }
    assert set(first_jobs.values()).isdisjoint(job.pk for job in again)

    Job.objects.filter(pk__in=[job.pk for job in again]).update(status=JobStatus.FAILURE)
    retries = jobs_retry_many(jobs=list(Job.objects.filter(pk__in=[job.pk for job in again]).order_by("created_at")))
    followed = set(Image.objects.values_list("job_id", flat=True))
    assert followed == {retry.pk for retry in retries}


def test_a_job_whose_argument_is_not_an_image_leaves_every_image_alone(upload):
    image = upload(samples.encoded(PILImage.new("RGB", (40, 30))))
    job_enqueue_many(task_name=RENDITIONS_TASK, calls=[(("not-a-uuid",), {}), ((), {})])
    image.refresh_from_db()
    assert Job.objects.get(pk=image.job_id).args == [str(image.id)]
