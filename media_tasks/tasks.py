"""The image job: load by id, call the service, report progress."""

from django.core.exceptions import ValidationError

from jobs.base_task import job_task
from jobs.exceptions import BadInput, TransientError
from jobs.queues import Queue
from media_tasks import services
from media_tasks.models import Image


# Not public: the generic jobs API would let a caller point it at any image
# id; uploads enqueue it through POST /api/images/ instead.
@job_task(
    name=services.RENDITIONS_TASK,
    queue=Queue.IMAGES,
    transient_errors=(TransientError,),
    public=False,
    on_created=services.images_follow_jobs,
)
def renditions_create(self, image_id: str) -> dict:
    """Makes every rendition of one image (settings.MEDIA_TASKS_RENDITIONS)."""
    try:
        image = Image.objects.filter(pk=image_id).first()
    except ValidationError:  # not a UUID
        image = None
    if image is None:
        raise BadInput(f"image {image_id} does not exist")
    renditions = services.renditions_create(image=image, progress=self.progress)
    return {
        "image": str(image.id),
        "renditions": {
            r.name: {"width": r.width, "height": r.height, "format": r.format, "bytes": r.bytes} for r in renditions
        },
    }
