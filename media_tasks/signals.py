"""An image's status is its newest job's, whoever creates that job: an
upload, the admin's regenerate, or a retry or requeue in the job core,
which knows nothing about images."""

from django.core.exceptions import ValidationError

from jobs.models import Job
from media_tasks.models import Image
from media_tasks.services import RENDITIONS_TASK


def image_follows_new_job(sender, instance: Job, created: bool, **kwargs) -> None:
    if not created or instance.task_name != RENDITIONS_TASK or not instance.args:
        return
    try:
        # Same transaction as the job's INSERT: both commit or neither.
        Image.objects.filter(pk=instance.args[0]).update(job=instance)
    except ValidationError:  # stored arguments that are not an image id
        pass
