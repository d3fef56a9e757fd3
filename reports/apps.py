from django.apps import AppConfig


class ReportsConfig(AppConfig):
    name = "reports"
    verbose_name = "Reports"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.utils.module_loading import autodiscover_modules

        # Report types declare themselves in `<app>/report_types.py` (the
        # kit's own are in reports/report_types/); importing registers them
        # in every process: web, workers, beat.
        autodiscover_modules("report_types")

        from reports import signals  # noqa: F401  (connects the handlers)
