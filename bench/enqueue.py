"""Bulk enqueue: N jobs from one call (jobs.services.job_enqueue_many)
against N plain `apply_async` calls, and against the kit's own one-at-a-time
path (job_enqueue in a loop).

No worker runs: what is timed is the caller's side only, from the first call
to the moment the last message is on the broker. For the kit that includes
the Job rows (committed), the broker's publisher confirms and the rows
marked QUEUED; for apply_async, the publish alone. Each variant's count is
checked afterwards against the queue's message count.
"""

import os
import time

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings_kit")
django.setup()


from bench import harness  # noqa: E402
from config.celery_app import app as kit_app  # noqa: E402
from jobs.models import Job, JobStatus  # noqa: E402
from jobs.queues import Queue  # noqa: E402
from jobs.services import job_enqueue, job_enqueue_many  # noqa: E402


class _KitVariant:
    app = kit_app
    queue = Queue.DEFAULT.value

    def check(self, jobs: int) -> None:
        if (queued := Job.objects.filter(status=JobStatus.QUEUED).count()) != jobs:
            raise RuntimeError(f"{self.name}: {queued} of {jobs} jobs are QUEUED.")


class KitBulk(_KitVariant):
    name = "kit-bulk"
    meaning = "job_enqueue_many: rows inserted 1,000 per statement, one channel, confirms awaited once per 1,000"

    def enqueue(self, jobs: int) -> None:
        job_enqueue_many(task_name="jobs.noop", calls=[((), {})] * jobs)


class KitOneByOne(_KitVariant):
    name = "kit-one-by-one"
    meaning = "job_enqueue in a loop: a committed row, a publish with its confirm, and the QUEUED update per job"

    def enqueue(self, jobs: int) -> None:
        for _ in range(jobs):
            job_enqueue(task_name="jobs.noop")


def _noop() -> None:
    """The body of bench.noop (bench/tasks.py); only its name travels."""


class _ApplyAsync:
    """`task.apply_async()` in a loop on a plain task, no Job rows."""

    def __init__(self):
        self.app = harness.plain_celery_app(self.settings_module)
        self.queue = self.app.conf.task_default_queue or Queue.DEFAULT.value
        self.task = self.app.task(name="bench.noop", shared=False)(_noop)

    def enqueue(self, jobs: int) -> None:
        for _ in range(jobs):
            self.task.apply_async()

    def check(self, jobs: int) -> None:
        harness.wait_for_messages(self.app, self.queue, jobs)


class ApplyAsyncConfirmed(_ApplyAsync):
    name = "apply_async-confirmed"
    meaning = "apply_async per job with the kit's broker settings: publisher confirms, one round trip per message"
    settings_module = "bench.settings_kit"


class ApplyAsyncDefault(_ApplyAsync):
    name = "apply_async-default"
    meaning = "apply_async per job with Celery's defaults: no publisher confirms (a lost message goes unnoticed)"
    settings_module = "bench.settings_bare"


def measure(variant, *, jobs: int) -> float:
    harness.empty_job_tables()
    harness.purge_queue(variant.app, variant.queue)
    began = time.perf_counter()
    variant.enqueue(jobs)
    seconds = time.perf_counter() - began
    variant.check(jobs)
    return seconds


QUICK = {"jobs": 1000, "rounds": 3}
FULL = {"jobs": 10000, "rounds": 3}


def run(*, quick: bool, jobs: int | None = None, rounds: int | None = None) -> dict:
    preset = QUICK if quick else FULL
    jobs = jobs or preset["jobs"]
    rounds = rounds or preset["rounds"]
    started_at, _, machine = harness.prepare_run()
    variants = {
        variant.name: variant for variant in (KitBulk(), ApplyAsyncConfirmed(), ApplyAsyncDefault(), KitOneByOne())
    }
    counts = harness.variant_counts(list(variants), jobs, slow=(KitOneByOne.name,), quick=quick)
    print(
        f"{harness.describe_counts(counts)} jobs enqueued per variant and round, {rounds} rounds, no worker running\n",
        flush=True,
    )
    rates, measurements = harness.rate_rounds(
        list(variants),
        rounds=rounds,
        count=counts,
        unit="jobs",
        measure=lambda name, _: measure(variants[name], jobs=counts[name]),
    )

    summary = {name: harness.spread(values) for name, values in rates.items()}
    others = tuple(name for name in rates if name != KitBulk.name)
    ratios = harness.kit_ratios(rates, summary, others=others, kit=KitBulk.name)

    print()
    harness.print_table([(name, summary[name]) for name in rates], unit="jobs/s")
    print()
    harness.print_ratios(ratios, width=34)

    return {
        "benchmark": "enqueue",
        "started_at": started_at,
        "machine": machine,
        "parameters": {"jobs": counts, "rounds": rounds},
        "variants": {name: variant.meaning for name, variant in variants.items()},
        "measurements": measurements,
        "summary_jobs_per_second": summary,
        "ratios": ratios,
    }


def main() -> None:
    parser = harness.rounds_parser(
        prog="python -m bench.enqueue", description="What enqueueing costs (not a test).", quick=QUICK, full=FULL
    )
    args = parser.parse_args()
    harness.report(run(quick=args.quick, jobs=args.jobs, rounds=args.rounds))


if __name__ == "__main__":
    main()
