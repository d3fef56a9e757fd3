from django.core.management.base import BaseCommand, CommandError

from jobs.exceptions import BadInput, UnknownTask
from jobs.maintenance import jobs_requeue, jobs_requeue_candidates
from jobs.models import RETRYABLE_STATUSES, JobStatus
from jobs.registry import get_job_task

DEFAULT_STATUSES = (JobStatus.FAILURE, JobStatus.DEAD)


class Command(BaseCommand):
    help = "Retry jobs that ended badly (FAILURE and DEAD by default), each once, replaying their stored arguments."

    def add_arguments(self, parser):
        parser.add_argument(
            "--status",
            action="append",
            type=str.upper,
            choices=[status.value for status in RETRYABLE_STATUSES],
            help="Retry jobs in this state; repeat for several (default: FAILURE and DEAD).",
        )
        parser.add_argument("--task", help="Only jobs of this task, e.g. media_tasks.renditions_create.")
        parser.add_argument("--dry-run", action="store_true", help="Count the jobs that would be retried; retry none.")

    def handle(self, *args, **options):
        statuses = [JobStatus(status) for status in options["status"] or DEFAULT_STATUSES]
        task_name = options["task"]
        if task_name:
            try:
                get_job_task(task_name)
            except UnknownTask as exc:
                raise CommandError(str(exc)) from None
        what = f"{'/'.join(statuses)} jobs" + (f" of {task_name}" if task_name else "")
        try:
            if options["dry_run"]:
                count = jobs_requeue_candidates(statuses=statuses, task_name=task_name).count()
                self.stdout.write(f"Would retry {count} {what}.")
                return
            count = jobs_requeue(statuses=statuses, task_name=task_name)
        except (BadInput, UnknownTask) as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(self.style.SUCCESS(f"Retried {count} {what}."))
