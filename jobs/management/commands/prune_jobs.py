from datetime import timedelta

from django.conf import settings
from django.core.management.base import BaseCommand

from jobs.maintenance import jobs_prune
from jobs.management.commands._arguments import non_negative_int, positive_int

BATCH_SIZE = 5000


class Command(BaseCommand):
    help = "Delete finished jobs and their results older than the retention period, in batches."

    def add_arguments(self, parser):
        parser.add_argument(
            "--days",
            type=non_negative_int,
            default=settings.JOBS_RETENTION_DAYS,
            help=(
                "Keep jobs that finished within this many days "
                f"(default: JOBS_RETENTION_DAYS, {settings.JOBS_RETENTION_DAYS})."
            ),
        )
        parser.add_argument(
            "--batch-size",
            type=positive_int,
            default=BATCH_SIZE,
            help=f"Rows deleted per transaction: short locks, flat memory (default: {BATCH_SIZE}).",
        )

    def handle(self, *args, **options):
        days = options["days"]
        deleted = jobs_prune(older_than=timedelta(days=days), batch_size=options["batch_size"])
        self.stdout.write(self.style.SUCCESS(f"Deleted {deleted} jobs that finished more than {days} days ago."))
