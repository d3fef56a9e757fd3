from django.apps import AppConfig


class MediaTasksConfig(AppConfig):
    name = "media_tasks"
    verbose_name = "Images"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.conf import settings
        from PIL import Image

        # Pillow's own bomb guard (a warning above the limit, an error above
        # twice it) follows the kit's limit rather than its built-in 89 MP;
        # media_tasks.imaging checks the header against the same limit first.
        Image.MAX_IMAGE_PIXELS = settings.MEDIA_TASKS_MAX_PIXELS
