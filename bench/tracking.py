"""What tracking a job costs, in CPU: the kit's two statements per job
(jobs.tracking.job_mark_started, then the result backend's TaskResult
upsert with the Job update), against the same two changes written for a
batch of jobs per statement, a design the kit does not use (BENCHMARKS.md,
throughput, says why it would matter and what it would change).

No worker and no broker: Job rows are inserted, then moved to STARTED and
to SUCCESS in a loop in this process, on one connection. The client's CPU is
this process's (time.process_time), PostgreSQL's that of its backend
(/proc/PID/stat). Both move far less with the machine's load than a rate
does, and the two added are what a job's tracking costs the stack.
"""

import os
import time

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings_kit")
django.setup()

from celery import states  # noqa: E402
from django.db import connection  # noqa: E402
from django.utils import timezone  # noqa: E402

from bench import cpu, harness  # noqa: E402
from config.celery_app import app as kit_app  # noqa: E402
from jobs.models import Job, JobStatus  # noqa: E402
from jobs.queues import MAX_DELIVERIES  # noqa: E402
from jobs.services import _new_job  # noqa: E402
from jobs.tracking import _DEAD_MESSAGE, _RUNNABLE, job_mark_started  # noqa: E402

WORKER = "bench-tracking@host"


class OneByOne:
    """What the kit runs: the worker child's two statements for each job."""

    name = "kit"

    def start(self, ids: list[str]) -> None:
        for job_id in ids:
            job_mark_started(job_id=job_id, worker=WORKER)

    def finish(self, ids: list[str]) -> None:
        for job_id in ids:
            kit_app.backend._store_result(job_id, None, states.SUCCESS)


# The kit's statements (jobs/tracking.py, jobs/backend.py) for many ids at
# once: the same columns, the same relaxed commit, prepared the same way.
_BATCH_START = f"""
    UPDATE jobs_job SET
        status = CASE WHEN deliveries >= {MAX_DELIVERIES} THEN '{JobStatus.DEAD}' ELSE '{JobStatus.STARTED}' END,
        error = CASE WHEN deliveries >= {MAX_DELIVERIES} THEN %(dead)s ELSE error END,
        finished_at = NULL, deliveries = deliveries + 1, attempts = attempts + 1, started_at = %(now)s,
        queued_at = CASE WHEN queued_at IS NULL OR queued_at > %(now)s THEN %(now)s ELSE queued_at END,
        worker = %(worker)s
    FROM (SELECT set_config('synchronous_commit', 'off', true)) AS relaxed_durability
    WHERE jobs_job.id = ANY(%(ids)s::uuid[]) AND status IN ({", ".join(f"'{status}'" for status in _RUNNABLE)})
    RETURNING jobs_job.id, status
"""
_BATCH_FINISH = """
    WITH job AS (
        UPDATE jobs_job SET status = 'SUCCESS', finished_at = %(now)s, progress = 100, error = ''
        FROM (SELECT set_config('synchronous_commit', 'off', true)) AS relaxed_durability
        WHERE jobs_job.id = ANY(%(ids)s::uuid[])
    )
    INSERT INTO django_celery_results_taskresult
        (task_id, status, content_type, content_encoding, result, date_done, date_created, traceback, meta,
         task_args, task_kwargs, task_name, worker, periodic_task_name, date_started)
    SELECT task_id, 'SUCCESS', 'application/json', 'utf-8', 'null', %(now)s, %(now)s, NULL, '{"children": []}',
           NULL, NULL, NULL, NULL, NULL, NULL
    FROM unnest(%(task_ids)s::varchar[]) AS task_id
    ON CONFLICT (task_id) DO UPDATE SET status = EXCLUDED.status, result = EXCLUDED.result,
        meta = EXCLUDED.meta, date_done = EXCLUDED.date_done
"""


class Batched:
    """The same changes, `batch` jobs per statement."""

    def __init__(self, batch: int):
        self.batch = batch
        self.name = f"batch-{batch}"

    def _batches(self, ids: list[str]):
        for start in range(0, len(ids), self.batch):
            yield ids[start : start + self.batch]

    def start(self, ids: list[str]) -> None:
        for batch in self._batches(ids):
            params = {"now": timezone.now(), "worker": WORKER, "ids": batch, "dead": _DEAD_MESSAGE}
            if len(connection.connection.execute(_BATCH_START, params, prepare=True).fetchall()) != len(batch):
                raise RuntimeError("A batch start missed a job.")

    def finish(self, ids: list[str]) -> None:
        for batch in self._batches(ids):
            params = {"now": timezone.now(), "ids": batch, "task_ids": batch}
            connection.connection.execute(_BATCH_FINISH, params, prepare=True)


def measure(variant, *, jobs: int) -> dict[str, float]:
    """CPU ms per job of the client and of PostgreSQL, for the start and the
    finish of `jobs` fresh Job rows."""
    harness.empty_job_tables()
    Job.objects.bulk_create([_new_job("jobs.noop", [], {}, "medium") for _ in range(jobs)])
    ids = [str(job_id) for job_id in Job.objects.values_list("id", flat=True)]
    connection.ensure_connection()
    backend = connection.connection.info.backend_pid
    costs = {}
    for step in ("start", "finish"):
        client, server = time.process_time(), cpu.process_seconds(backend)
        getattr(variant, step)(ids)
        costs[f"{step} client"] = 1000 * (time.process_time() - client) / jobs
        costs[f"{step} postgresql"] = 1000 * (cpu.process_seconds(backend) - server) / jobs
    if (done := Job.objects.filter(status=JobStatus.SUCCESS).count()) != jobs:
        raise RuntimeError(f"{variant.name}: {done} of {jobs} jobs reached SUCCESS.")
    return {**costs, "total": sum(costs.values())}


QUICK = {"jobs": 2000, "rounds": 2}
FULL = {"jobs": 5000, "rounds": 5}
BATCHES = (4, 16)


def run(*, quick: bool, jobs: int | None = None, rounds: int | None = None) -> dict:
    preset = QUICK if quick else FULL
    jobs = jobs or preset["jobs"]
    rounds = rounds or preset["rounds"]
    started_at, _, machine = harness.prepare_run()
    variants = [OneByOne(), *(Batched(size) for size in BATCHES)]
    print(f"{jobs:,} jobs per variant and round, {rounds} rounds, one connection, no worker\n", flush=True)
    results: dict[str, list[dict[str, float]]] = {variant.name: [] for variant in variants}
    measurements = []
    for round_number in range(1, rounds + 1):
        for variant in variants:
            costs = measure(variant, jobs=jobs)
            results[variant.name].append(costs)
            measurements.append({"round": round_number, "variant": variant.name, "cpu_ms_per_job": costs})
            print(f"round {round_number}  {variant.name:<9} {costs['total']:.3f} ms of CPU per job", flush=True)
    summary = {name: cpu.median(costs) for name, costs in results.items()}

    print()
    cpu.print_table(summary, unit="job", baseline="kit")

    return {
        "benchmark": "tracking",
        "started_at": started_at,
        "machine": machine,
        "parameters": {"jobs": jobs, "rounds": rounds, "batches": [1, *BATCHES]},
        "measurements": measurements,
        "cpu_ms_per_job_median": summary,
    }


def main() -> None:
    parser = harness.rounds_parser(
        prog="python -m bench.tracking", description="What tracking costs in CPU (not a test).", quick=QUICK, full=FULL
    )
    args = parser.parse_args()
    harness.report(run(quick=args.quick, jobs=args.jobs, rounds=args.rounds))


if __name__ == "__main__":
    main()
