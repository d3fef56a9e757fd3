"""Throughput of tracked no-op jobs through the kit, against bare Celery (the
limit) and the common django-celery-results default; and the kit's delivery
policy without tracking (kit-untracked), which splits the gap to bare Celery
into what tracking costs and what the delivery guarantees cost; and the kit
in quorum mode on a three-node RabbitMQ cluster of the run's own on loopback
(kit-quorum, in full mode or with --quorum), which is what replication
costs; and the kit writing each
start as the job begins (kit-start-at-once, JOBS_START_RECORD_DELAY_MS=0),
which is what deferring the start to the end statement saves (jobs/starts.py);
and the kit with each worker child writing its own ends (kit-child-ends,
JOBS_BATCHED_ENDS=false), which is what the main process's batches of ends
save (jobs/end_batches.py). Quick mode (make bench) runs the kit, bare
Celery and the common default only: the others split the kit's cost into
its parts, and no aim reads them.

Per round, each variant in turn, the order rotated round by round
(A/B/C/D, B/C/D/A, ...; bench.harness.rate_rounds), so load from whatever
else runs on the machine lands on all of them alike; the ratios are the
result, the absolute figures belong to this machine on this day.

Per variant: empty the tables, start a fresh worker parked (up, consuming
nothing of the variant's queue), publish N messages meanwhile, let the
worker at them once it is up, and time the drain from the first task's
start to the last task's end as recorded by the worker itself. Worker
start-up, publishing and polling lag are outside the window.
"""

import os
from contextlib import ExitStack, contextmanager
from datetime import datetime
from pathlib import Path

import django

# The models below need Django set up first, on the benchmark's own settings
# (its own database and vhost, bench/settings_kit.py).
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings_kit")
django.setup()

from celery import states  # noqa: E402
from django.db.models import Max, Min  # noqa: E402
from django_celery_results.models import TaskResult  # noqa: E402

from bench import cpu, harness  # noqa: E402
from config.celery_app import app as kit_app  # noqa: E402
from jobs.models import Job, JobStatus  # noqa: E402
from jobs.queues import PRIORITY_VALUE, QUEUE_TIME_LIMITS, Priority, Queue, QueueType, lane_name  # noqa: E402
from jobs.services import job_enqueue_many  # noqa: E402
from tests.reliability.rabbitmq_cluster import quorum_mode, running_cluster  # noqa: E402


def _seconds(start: datetime | None, end: datetime | None) -> float:
    if start is None or end is None:
        raise RuntimeError("No start or end time recorded; see the worker log.")
    return (end - start).total_seconds()


class Kit:
    name = "kit"
    meaning = (
        "jobs.noop via job_enqueue_many: Job row + TaskResult upsert (ends written by the worker's main "
        "process, several to a statement), late acks, "
        "prefetch 1 per child (8 while jobs are short), priority queue"
    )
    settings_module = "bench.settings_kit"
    queue = Queue.DEFAULT.value
    worker_env: dict = {}
    app = kit_app

    def publish(self, jobs: int) -> None:
        harness.purge_queue(kit_app, self.queue)
        # Committed Job rows, confirmed by the broker, QUEUED (publishing is
        # outside the timed window).
        job_enqueue_many(task_name="jobs.noop", calls=[((), {})] * jobs)
        if (queued := Job.objects.filter(status=JobStatus.QUEUED).count()) != jobs:
            raise RuntimeError(f"Only {queued} of {jobs} jobs reached the broker.")

    def finished(self) -> int:
        return Job.objects.filter(finished_at__isnull=False).count()

    def seconds(self, jobs: int) -> float:
        if (ok := Job.objects.filter(status=JobStatus.SUCCESS).count()) != jobs:
            raise RuntimeError(f"Only {ok} of {jobs} kit jobs succeeded.")
        # Both written by the worker child: the time the body began and the
        # time it ended (in one statement at the end, or the start as it
        # happens with JOBS_START_RECORD_DELAY_MS=0; jobs/starts.py).
        window = Job.objects.aggregate(start=Min("started_at"), end=Max("finished_at"))
        return _seconds(window["start"], window["end"])


class KitQuorum(Kit):
    """The kit in quorum mode: the same jobs, each message replicated to a
    majority of three RabbitMQ nodes before the broker confirms it and
    again when it is acknowledged. The three nodes share this machine's
    cores with everything else, so the figure is a floor for a real cluster
    (separate hosts, with a network hop instead)."""

    name = "kit-quorum"
    meaning = (
        "jobs.noop as kit, KIT_QUEUE_TYPE=quorum: the default queue's medium lane, a quorum queue on a "
        "three-node RabbitMQ cluster on loopback, clients given every node"
    )
    queue = lane_name(Queue.DEFAULT, Priority.MEDIUM, QueueType.QUORUM)

    def __init__(self, cluster):
        self.cluster = cluster
        self.worker_env: dict = {}

    @contextmanager
    def active(self):
        """This process publishes, and the worker consumes, in quorum mode on
        the cluster, for one measurement (the other variants stay classic)."""
        with quorum_mode(self.cluster.failover_url, self.worker_env):
            # bench/settings_kit.py sets the broker from BENCH_BROKER_URL.
            self.worker_env["BENCH_BROKER_URL"] = self.cluster.failover_url
            yield


class _PlainCelery:
    """bench.noop published straight to Celery with the variant's own settings."""

    settings_module: str
    send_options: dict = {}

    def __init__(self):
        # A second Celery app, configured like the variant's workers; the
        # process-wide Django settings stay the kit's.
        self.app = harness.plain_celery_app(self.settings_module)
        self.queue = self.app.conf.task_default_queue

    def publish(self, jobs: int) -> None:
        harness.purge_queue(self.app, self.queue)
        with self.app.producer_or_acquire() as producer:
            for _ in range(jobs):
                self.app.send_task("bench.noop", producer=producer, **self.send_options)
        harness.wait_for_messages(self.app, self.queue, jobs)


class _Stamped(_PlainCelery):
    """Nothing is stored, so the worker notes each task's start and end in a
    file (bench/tasks.py). Polling the queue's message count instead would
    miss prefetched messages and add polling lag."""

    def __init__(self, scratch: Path):
        super().__init__()
        self.stamps = scratch / f"{self.name}-stamps.txt"
        self.worker_env = {"BENCH_STAMP_FILE": str(self.stamps)}

    def publish(self, jobs: int) -> None:
        self.stamps.unlink(missing_ok=True)
        super().publish(jobs)

    def finished(self) -> int:
        return len(harness.read_stamps(self.stamps))

    def seconds(self, jobs: int) -> float:
        stamps = harness.read_stamps(self.stamps)
        if len(stamps) != jobs:
            raise RuntimeError(f"{len(stamps)} of {jobs} {self.name} tasks ran.")
        return max(end for _, end in stamps) - min(start for start, _ in stamps)


class Bare(_Stamped):
    name = "bare"
    meaning = "bench.noop, results ignored, acks on receipt, prefetch 4: the limit"
    settings_module = "bench.settings_bare"


class KitUntracked(_Stamped):
    """Not a baseline but a decomposition: the kit's delivery policy with no
    tracking at all, so kit/kit-untracked is what tracking costs and
    kit-untracked/bare what the delivery guarantees cost."""

    name = "kit-untracked"
    meaning = (
        "bench.noop with the kit's delivery policy (late acks, prefetch 1 per child or 8 while jobs are short, "
        "priority queue, time limits), no Job row, no result"
    )
    settings_module = "bench.settings_kit_untracked"
    # What jobs.publishing._send gives a medium job on the default queue.
    send_options = {
        "queue": Queue.DEFAULT.value,
        "priority": PRIORITY_VALUE[Priority.MEDIUM],
        "soft_time_limit": QUEUE_TIME_LIMITS[Queue.DEFAULT].soft,
        "time_limit": QUEUE_TIME_LIMITS[Queue.DEFAULT].hard,
    }


class CommonDefault(_PlainCelery):
    name = "common-default"
    meaning = 'bench.noop, stock "django-db" results, result_extended, track_started, CONN_MAX_AGE=0'
    settings_module = "bench.settings_common_default"
    worker_env: dict = {}

    def finished(self) -> int:
        return TaskResult.objects.filter(status__in=states.READY_STATES).count()

    def seconds(self, jobs: int) -> float:
        if (ok := TaskResult.objects.filter(status=states.SUCCESS).count()) != jobs:
            raise RuntimeError(f"Only {ok} of {jobs} common-default tasks succeeded.")
        # date_started is stored with the STARTED state (track_started),
        # date_done with the last write (auto_now).
        window = TaskResult.objects.aggregate(start=Min("date_started"), end=Max("date_done"))
        return _seconds(window["start"], window["end"])


def measure(
    variant,
    *,
    jobs: int,
    concurrency: int,
    log_path: Path,
    servers: tuple[str, ...] = ("postgresql", "rabbitmq"),
    databases: tuple[str, ...] | None = None,
) -> tuple[float, dict[str, float]]:
    """Seconds the variant's worker took to run `jobs` pre-published jobs,
    and the CPU milliseconds each part of the stack (the worker, and the
    `servers` of bench.cpu.SERVERS; PostgreSQL only for `databases`, if
    given) spent per job meanwhile (from the
    moment the idle worker was told to consume until the last job was seen
    finished)."""
    harness.empty_job_tables()
    with harness.Worker(
        name=variant.name,
        settings_module=variant.settings_module,
        queue=variant.queue,
        concurrency=concurrency,
        log_path=log_path,
        env=variant.worker_env,
        parked=True,
    ) as worker:

        def drained() -> bool:
            worker.check_alive()
            return variant.finished() >= jobs

        # While the parked worker starts (about a second: imports, forking
        # its pool), outside the window and before the CPU is read. Nothing
        # of the publishing lingers into the window: PostgreSQL and RabbitMQ
        # spent no CPU tick in the second after job_enqueue_many returned.
        variant.publish(jobs)
        worker.wait_until_up(variant.app)
        before = cpu.snapshot(worker.process.pid, servers=servers, databases=databases)
        worker.consume(variant.app)
        # Generous: even the slowest variant runs more than 20 jobs a second.
        harness.wait_until(drained, timeout=60 + jobs / 20, what=f"{variant.name} to run {jobs} jobs ({log_path})")
        after = cpu.snapshot(worker.process.pid, servers=servers, databases=databases)
    return variant.seconds(jobs), cpu.per_item_ms(before, after, jobs)


class KitChildEnds(Kit):
    """The kit with each worker child writing its own jobs' ends, one
    statement per job: what the main process's batches (jobs.end_batches)
    save."""

    name = "kit-child-ends"
    meaning = "jobs.noop as kit, JOBS_BATCHED_ENDS=false: each end written by its worker child, one statement per job"
    worker_env = {"JOBS_BATCHED_ENDS": "false"}


class KitStartAtOnce(Kit):
    """The kit writing each job's start as the job begins: what deferring it
    to the end statement (jobs/starts.py) saves."""

    name = "kit-start-at-once"
    meaning = "jobs.noop as kit, JOBS_START_RECORD_DELAY_MS=0: STARTED written as each job begins, two statements"
    worker_env = {"JOBS_START_RECORD_DELAY_MS": "0"}


QUICK = {"jobs": 1000, "rounds": 3}
FULL = {"jobs": 5000, "rounds": 5}


def run(
    *, quick: bool, jobs: int | None = None, rounds: int | None = None, concurrency: int = 2, quorum: bool | None = None
) -> dict:
    preset = QUICK if quick else FULL
    jobs = jobs or preset["jobs"]
    rounds = rounds or preset["rounds"]
    # The three-node cluster takes half a minute to start and run its
    # rounds: quick mode (make bench, kept under 6 minutes) leaves it out.
    quorum = not quick if quorum is None else quorum
    started_at, scratch, machine = harness.prepare_run()
    stack = ExitStack()
    cluster = stack.enter_context(running_cluster(prefix="kitbench")) if quorum else None
    # Quick mode (make bench, kept under 6 minutes) runs what its aims
    # compare: the kit, bare Celery and the common default. The variants that
    # split the kit's cost into its parts (kit-untracked, kit-child-ends,
    # kit-start-at-once) took a third of its time; the full run has them.
    parts = () if quick else (KitChildEnds(), KitStartAtOnce(), KitUntracked(scratch))
    variants = {
        variant.name: variant
        for variant in (
            Kit(),
            *parts,
            Bare(scratch),
            CommonDefault(),
            *([KitQuorum(cluster)] if quorum else []),
        )
    }
    counts = harness.variant_counts(list(variants), jobs, slow=(CommonDefault.name,), quick=quick)
    print(
        f"{harness.describe_counts(counts)} no-op jobs per variant and round, {rounds} rounds, "
        f"{concurrency} prefork children\n",
        flush=True,
    )

    cpu_costs: dict[str, list[dict[str, float]]] = {name: [] for name in variants}

    def run_variant(name: str, round_number: int) -> float:
        log_path = scratch / f"worker-{name}-{round_number}.log"
        variant = variants[name]
        with variant.active() if hasattr(variant, "active") else ExitStack():
            seconds, cost = measure(variant, jobs=counts[name], concurrency=concurrency, log_path=log_path)
        cpu_costs[name].append(cost)
        return seconds

    with stack:  # the cluster stops once the rounds are over
        rates, measurements = harness.rate_rounds(
            list(variants), rounds=rounds, count=counts, unit="jobs", measure=run_variant
        )
    for measurement in measurements:
        measurement["cpu_ms_per_job"] = cpu_costs[measurement["variant"]][measurement["round"] - 1]
    cpu_summary = {name: cpu.median(costs) for name, costs in cpu_costs.items()}

    summary = {name: harness.spread(values) for name, values in rates.items()}
    ratios = harness.kit_ratios(rates, summary, others=("bare", "common-default", *(part.name for part in parts)))
    if "kit-untracked" in variants:
        ratios.update(harness.kit_ratios(rates, summary, others=("bare",), kit="kit-untracked"))
    if quorum:
        ratios.update(harness.kit_ratios(rates, summary, others=("kit",), kit="kit-quorum"))

    print()
    harness.print_table([(name, summary[name]) for name in rates], unit="jobs/s")
    print()
    harness.print_ratios(ratios, width=20)
    print()
    cpu.print_table(cpu_summary, unit="job", baseline="bare")

    return {
        "benchmark": "throughput",
        "started_at": started_at,
        "machine": machine,
        "parameters": {"jobs": counts, "rounds": rounds, "concurrency": concurrency, "pool": "prefork"},
        "variants": {name: variant.meaning for name, variant in variants.items()},
        "measurements": measurements,
        "summary_jobs_per_second": summary,
        "cpu_ms_per_job_median": cpu_summary,
        "ratios": ratios,
    }


def main() -> None:
    parser = harness.rounds_parser(
        prog="python -m bench.throughput", description="What tracking costs (not a test).", quick=QUICK, full=FULL
    )
    parser.add_argument("--concurrency", type=int, default=2, help="prefork children per worker (default 2)")
    parser.add_argument(
        "--quorum", action="store_true", default=None, help="also kit-quorum in quick mode (full mode always has it)"
    )
    args = parser.parse_args()
    harness.report(
        run(quick=args.quick, jobs=args.jobs, rounds=args.rounds, concurrency=args.concurrency, quorum=args.quorum)
    )


if __name__ == "__main__":
    main()
