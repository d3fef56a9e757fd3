from django.apps import AppConfig


class MediaTasksConfig(AppConfig):
    name = "media_tasks"
    verbose_name = "Images"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.conf import settings
        from django.db.models.signals import post_save
        from PIL import Image

        from jobs.models import Job
        from media_tasks.signals import image_follows_new_job

        post_save.connect(image_follows_new_job, sender=Job, dispatch_uid="media_tasks.image_follows_new_job")

        # Pillow's own bomb guard (a warning above the limit, an error above
        # twice it) follows the kit's limit rather than its built-in 89 MP;
        # media_tasks.imaging checks the header against the same limit first.
        Image.MAX_IMAGE_PIXELS = settings.MEDIA_TASKS_MAX_PIXELS
