from django.apps import AppConfig


class ReportsConfig(AppConfig):
    name = "reports"
    verbose_name = "Reports"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.models.signals import post_save
        from django.utils.module_loading import autodiscover_modules

        from jobs.models import Job
        from reports.signals import run_follows_new_job

        # Report types declare themselves in `<app>/report_types.py` (the
        # kit's own are in reports/report_types/); importing registers them
        # in every process: web, workers, beat.
        autodiscover_modules("report_types")
        post_save.connect(run_follows_new_job, sender=Job, dispatch_uid="reports.run_follows_new_job")
