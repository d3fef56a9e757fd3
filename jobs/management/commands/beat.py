from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from jobs.beat_lock import BeatLock
from jobs.management.commands._arguments import LOG_LEVELS
from jobs.management.commands._celery import celery_run


class Command(BaseCommand):
    help = (
        "Run Celery beat, the scheduler of periodic tasks (editable in the admin). On PostgreSQL a second beat "
        "waits, sending nothing, until the first one ends (jobs/beat_lock.py)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--loglevel",
            type=str.upper,
            choices=LOG_LEVELS,
            default=settings.LOG_LEVEL,
            help="Logging level (default: LOG_LEVEL from the environment).",
        )
        parser.add_argument(
            "--quiet", action="store_true", help="Do not print Celery's start-up banner (`manage.py up` sets it)."
        )
        parser.add_argument(
            "--pidfile",
            default=str(settings.VAR_DIR / "celerybeat.pid"),
            help="PID file; a second beat on this machine refuses to start while it names a live process "
            "(default: VAR_DIR/celerybeat.pid).",
        )

    def handle(self, *args, **options):
        settings.VAR_DIR.mkdir(parents=True, exist_ok=True)
        lock = BeatLock(poll_seconds=settings.JOBS_BEAT_LOCK_POLL_SECONDS)
        lock.acquire(notify=lambda message: self.stderr.write(message))
        lock.watch()
        try:
            code = celery_run(self.build_argv(options), quiet=options["quiet"])
        finally:
            lock.release()
        if code:
            raise CommandError(f"Beat exited with code {code}.", returncode=code)

    def build_argv(self, options: dict) -> list[str]:
        """The `celery beat` arguments for these options."""
        return [
            "beat",
            "--scheduler",
            settings.CELERY_BEAT_SCHEDULER,
            "--pidfile",
            options["pidfile"],
            # Read only by Celery's file-based scheduler, if CELERY_BEAT_SCHEDULER
            # is ever switched to it: keeps its state out of the working directory.
            "--schedule",
            str(settings.VAR_DIR / "celerybeat-schedule"),
            "--loglevel",
            options["loglevel"],
        ]
