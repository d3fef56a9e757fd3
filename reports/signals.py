"""A run's status is its newest job's, whoever creates that job: a request,
the admin's regenerate, or a retry in the job core, which knows nothing
about reports."""

from django.core.exceptions import ValidationError

from jobs.models import Job
from reports.models import ReportRun

GENERATE_TASK = "reports.report_generate"


def run_follows_new_job(sender, instance: Job, created: bool, **kwargs) -> None:
    if not created or instance.task_name != GENERATE_TASK or not instance.args:
        return
    try:
        # Same transaction as the job's INSERT: both commit or neither.
        ReportRun.objects.filter(pk=instance.args[0]).update(job=instance)
    except ValidationError:  # stored arguments that are not a run id
        pass
