import argparse
import os

from celery.signals import worker_shutting_down
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import autoreload

from jobs.management.commands._arguments import LOG_LEVELS, positive_int
from jobs.management.commands._celery import WorkerReloader, celery_run, stop_with_lifeline
from jobs.queues import WORKER_GROUPS, Queue, broker_queue_names

# A pool child is replaced after this many tasks, or after the task during
# which its resident memory passed this many KiB: a slow leak in a library
# (an image decoder, a PDF renderer) costs a fresh child, not the machine.
MAX_TASKS_PER_CHILD = 1000
MAX_MEMORY_PER_CHILD_KIB = 512 * 1024
# The pools that need nothing beyond Celery itself.
POOLS = ("prefork", "threads", "solo")


class Command(BaseCommand):
    help = "Run a Celery worker for one group of queues (jobs.queues.WORKER_GROUPS), or for --queues."

    def add_arguments(self, parser):
        which = parser.add_mutually_exclusive_group()
        which.add_argument(
            "--group",
            help=f"Consume the queues of this worker group: {', '.join(WORKER_GROUPS)}.",
        )
        which.add_argument(
            "--queues",
            help=f"Comma-separated queues to consume, of: {', '.join(Queue)}. Default: all of them.",
        )
        parser.add_argument(
            "--concurrency",
            type=positive_int,
            help="Pool processes (or threads). Default: the number of CPUs.",
        )
        parser.add_argument("--pool", choices=POOLS, default="prefork", help="Execution pool (default: prefork).")
        parser.add_argument(
            "--hostname",
            help="Node name, unique per machine (default: <group>@%%h, %%h being the host name).",
        )
        parser.add_argument(
            "--loglevel",
            type=str.upper,
            choices=LOG_LEVELS,
            default=settings.LOG_LEVEL,
            help="Logging level (default: LOG_LEVEL from the environment).",
        )
        parser.add_argument(
            "--max-tasks-per-child",
            type=positive_int,
            default=MAX_TASKS_PER_CHILD,
            help=f"Replace a pool process after this many tasks (default: {MAX_TASKS_PER_CHILD}).",
        )
        parser.add_argument(
            "--max-memory-per-child",
            type=positive_int,
            default=MAX_MEMORY_PER_CHILD_KIB,
            help=(
                "Replace a pool process whose resident memory passed this many KiB "
                f"(default: {MAX_MEMORY_PER_CHILD_KIB})."
            ),
        )
        parser.add_argument(
            "--quiet", action="store_true", help="Do not print Celery's start-up banner (`manage.py up` sets it)."
        )
        parser.add_argument(
            "--autoreload",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="Restart the worker when a .py file changes (default: on when DEBUG is on).",
        )

    def handle(self, *args, **options):
        argv = self.build_argv(options)
        if self.autoreload_enabled(options):
            command = [*autoreload.get_child_arguments(), "--no-autoreload"]
            WorkerReloader(command, notify=self.stderr.write).run()
            return
        stop_with_lifeline()
        asked_to_stop = []
        worker_shutting_down.connect(lambda sig, **kwargs: asked_to_stop.append(sig), weak=False)
        code = celery_run(argv, quiet=options["quiet"])
        # Celery exits 1 after a Ctrl-C (SIGINT); a stop that was asked for is
        # not a failure.
        if code and not asked_to_stop:
            raise CommandError(f"The worker exited with code {code}.", returncode=code)

    def build_argv(self, options: dict) -> list[str]:
        """The `celery worker` arguments for these options."""
        queues = self.selected_queues(options)
        label = options["group"] or ("all" if len(queues) == len(Queue) else "-".join(queues))
        argv = [
            "worker",
            "--queues",
            # In quorum mode each queue is consumed as its priority lanes.
            ",".join(broker_queue_names(queues, settings.KIT_QUEUE_TYPE)),
            "--hostname",
            options["hostname"] or f"{label}@%h",
            "--pool",
            options["pool"],
            "--concurrency",
            str(options["concurrency"] or os.cpu_count() or 1),
            "--loglevel",
            options["loglevel"],
            # Hand each message to a free pool process, never queue it behind
            # a long task in a busy one.
            "-O",
            "fair",
            # The database is the authority on cancelled jobs (the task checks
            # its Job row when it starts), so mingle's start-up sync of revoked
            # ids and gossip's chatter between workers buy nothing but traffic.
            "--without-gossip",
            "--without-mingle",
        ]
        if options["pool"] == "prefork":
            argv += [
                "--max-tasks-per-child",
                str(options["max_tasks_per_child"]),
                "--max-memory-per-child",
                str(options["max_memory_per_child"]),
            ]
        if settings.CELERY_WORKER_SEND_TASK_EVENTS:
            argv.append("--task-events")  # what Flower shows
        return argv

    def selected_queues(self, options: dict) -> list[str]:
        group = options["group"]
        if group:
            if group not in WORKER_GROUPS:
                raise CommandError(f"Unknown worker group {group!r}. Valid groups: {', '.join(WORKER_GROUPS)}.")
            return [queue.value for queue in WORKER_GROUPS[group]]
        if not options["queues"]:
            return [queue.value for queue in Queue]
        names = list(dict.fromkeys(name.strip() for name in options["queues"].split(",") if name.strip()))
        unknown = [name for name in names if name not in {queue.value for queue in Queue}]
        if unknown or not names:
            raise CommandError(
                f"Unknown queue {', '.join(unknown) or '(none given)'}. Valid queues: {', '.join(Queue)}."
            )
        return names

    def autoreload_enabled(self, options: dict) -> bool:
        return settings.DEBUG if options["autoreload"] is None else options["autoreload"]
