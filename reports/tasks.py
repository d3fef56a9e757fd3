"""The report jobs: generate one run's file, start one scheduled run, and
the hourly clean-up of expired files."""

from celery import shared_task
from django.core.exceptions import ValidationError
from django.db import InterfaceError, OperationalError

from jobs.base_task import job_task
from jobs.exceptions import BadInput, TransientError
from jobs.queues import Queue
from reports import scheduling, services
from reports.models import ReportRun


# Not public: the generic jobs API would let a caller generate any run;
# POST /api/reports/ checks the asker first. A lost database connection
# mid-export is worth another try from the start (the file is replaced).
@job_task(
    name=services.GENERATE_TASK,
    queue=Queue.REPORTS,
    transient_errors=(TransientError, OperationalError, InterfaceError),
    on_created=services.runs_follow_jobs,
)
def report_generate(self, run_id: str) -> dict:
    """Writes the file of one report run."""
    try:
        run = ReportRun.objects.filter(pk=run_id).first()
    except ValidationError:  # not a UUID
        run = None
    if run is None:
        raise BadInput(f"report run {run_id} does not exist")
    return services.report_generate(run=run, progress=self.progress)


# What a django-celery-beat PeriodicTask calls (reports/README.md). Quick:
# it creates the run and its generate job, so it runs on the default queue.
@job_task(name=services.SCHEDULE_TASK, queue=Queue.DEFAULT)
def report_schedule_run(self, type: str, format: str = "csv", params=None, owner=None, email_to=()) -> dict:
    """Starts one run of a scheduled report (kwargs as in a PeriodicTask)."""
    run = scheduling.report_schedule_run(
        report_type=type,
        format=format,
        params=params,
        owner=owner,
        email_to=email_to,
        idempotency_key=f"schedule:{self.request.id}",
    )
    return {"run": str(run.id), "job": str(run.job_id) if run.job_id else None}


# Not a job task: it runs every hour and would fill the job table. On the
# reports queue because those workers are the ones with the storage.
@shared_task(name="reports.delete_expired", ignore_result=True, queue=Queue.REPORTS.value)
def delete_expired() -> int:
    return services.reports_delete_expired()
