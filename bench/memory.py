"""python -m bench.memory [--quick] [--before N] [--after N] [--variants A,B,...]

Whether a worker leaks: the resident memory (VmRSS, /proc) of a worker's
main process and of each of its 2 prefork children once it has run
`before` no-op jobs, and again once it has run `after`, then after/before.
A leak of a few hundred bytes a job shows as a ratio well above 1.

- kit:           jobs.noop through a kit worker (bench.settings_kit), no
                 child recycling: every child lives through all the jobs.
- bare:          bench.noop through a bare Celery worker
                 (bench/settings_bare.py), the same counts: the baseline.
- bare-time-limits: the same bare worker, each message carrying the
                 kit's time limits for the default queue (soft 60 s, hard
                 90 s): Celery's pool keeps a timer per job in the main
                 process, which tells the kit's own memory from Celery's.
- kit-recycling: the kit worker as `manage.py worker` starts it, which
                 replaces a child after MAX_TASKS_PER_CHILD (1,000) jobs or
                 once it passes MAX_MEMORY_PER_CHILD_KIB (512 MiB,
                 jobs/management/commands/worker.py). Its children at the
                 end are young ones, so only its main process says anything
                 about a leak; it shows what a deployment runs.

The quick mode runs kit and bare; the full mode all four (--variants).

Per variant (one run each: memory does not jitter like time): empty the
tables and the queue, start the worker, enqueue `before` jobs, wait until
they ran and SETTLE_SECONDS more, read the RSS; enqueue the rest in batches
(the next batch once fewer than BATCH jobs wait, so the queue never holds
them all), stopping to read again every CHECKPOINT jobs and at `after`. The
readings in between tell a leak, which grows for as long as jobs run, from
memory that fills up to a bound and stays. Kit jobs are enqueued the kit's
way (harness.enqueue_noops), bare ones with send_task on one producer.
"""

import argparse
import itertools
import os
import time
from pathlib import Path

import django

# The models below need Django set up first, on the benchmark's own settings
# (its own database and vhost, bench/settings_kit.py).
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings_kit")
django.setup()

from bench import harness  # noqa: E402
from config.celery_app import app as kit_app  # noqa: E402
from jobs.management.commands.worker import MAX_MEMORY_PER_CHILD_KIB, MAX_TASKS_PER_CHILD  # noqa: E402
from jobs.models import Job, JobStatus  # noqa: E402
from jobs.queues import QUEUE_TIME_LIMITS, Queue  # noqa: E402

QUICK = {"before": 1000, "after": 5000, "variants": ("kit", "bare")}
FULL = {"before": 1000, "after": 50_000, "variants": ("kit", "bare", "bare-time-limits", "kit-recycling")}
CONCURRENCY = 2
BATCH = 5000
CHECKPOINT = 5000
# After the last job, so acknowledgements, result writes and the children's
# bookkeeping are done before the reading.
SETTLE_SECONDS = 1.0


def _rss_kib(pid: int) -> int | None:
    """VmRSS in KiB, or None once the process has exited (a zombie not yet
    reaped has no VmRSS)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return None
    return next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), None)


def rss_snapshot(main_pid: int) -> dict:
    """VmRSS in KiB of the worker's main process and of each pool child,
    children in pid order (a child may have been forked by any thread).
    Under recycling a child may be exiting and its successor starting, so
    this waits until the pool has its CONCURRENCY live children."""
    deadline = time.monotonic() + 10
    while True:
        pids = sorted(
            int(pid)
            for task in Path(f"/proc/{main_pid}/task").iterdir()
            for pid in (task / "children").read_text().split()
        )
        children = {str(pid): rss for pid in pids if (rss := _rss_kib(pid)) is not None}
        if len(children) == CONCURRENCY:
            return {"main": _rss_kib(main_pid), "children": children}
        if time.monotonic() > deadline:
            raise RuntimeError(f"The worker {main_pid} has {len(children)} live pool children, not {CONCURRENCY}.")
        time.sleep(0.1)


class Kit:
    name = "kit"
    meaning = "jobs.noop, kit worker, no child recycling"
    settings_module = "bench.settings_kit"
    queue = Queue.DEFAULT.value
    worker_args: tuple[str, ...] = ()
    worker_env: dict = {}

    def __init__(self, scratch: Path):
        """Variants are built with the run's scratch folder, where the bare
        ones keep their stamps; the kit's jobs are tracked in the database."""

    def reset(self) -> None:
        harness.empty_job_tables()
        harness.purge_queue(kit_app, self.queue)

    def publish(self, count: int) -> None:
        harness.enqueue_noops(count)

    def finished(self) -> int:
        return Job.objects.filter(finished_at__isnull=False).count()

    def check(self, total: int) -> None:
        if (ok := Job.objects.filter(status=JobStatus.SUCCESS).count()) != total:
            raise RuntimeError(f"Only {ok} of {total} {self.name} jobs succeeded.")


class KitRecycling(Kit):
    name = "kit-recycling"
    meaning = (
        f"jobs.noop, kit worker as manage.py worker starts it: --max-tasks-per-child {MAX_TASKS_PER_CHILD}, "
        f"--max-memory-per-child {MAX_MEMORY_PER_CHILD_KIB}"
    )
    worker_args = (
        "--max-tasks-per-child",
        str(MAX_TASKS_PER_CHILD),
        "--max-memory-per-child",
        str(MAX_MEMORY_PER_CHILD_KIB),
    )


class Bare:
    name = "bare"
    meaning = "bench.noop, bare Celery worker (results ignored, acks on receipt, prefetch 4)"
    settings_module = "bench.settings_bare"
    worker_args: tuple[str, ...] = ()
    send_options: dict = {}

    def __init__(self, scratch: Path):
        self.app = harness.plain_celery_app(self.settings_module)
        self.queue = self.app.conf.task_default_queue
        # Nothing is stored: the worker notes each task in this file.
        self.stamps = scratch / f"{self.name}-stamps.txt"
        self.worker_env = {"BENCH_STAMP_FILE": str(self.stamps)}

    def reset(self) -> None:
        harness.purge_queue(self.app, self.queue)
        self.stamps.unlink(missing_ok=True)

    def publish(self, count: int) -> None:
        with self.app.producer_or_acquire() as producer:
            for _ in range(count):
                self.app.send_task("bench.noop", producer=producer, **self.send_options)

    def finished(self) -> int:
        return self.stamps.read_bytes().count(b"\n") if self.stamps.exists() else 0

    def check(self, total: int) -> None:
        if (ran := self.finished()) != total:
            raise RuntimeError(f"{ran} of {total} {self.name} tasks ran.")


class BareTimeLimits(Bare):
    name = "bare-time-limits"
    _limits = QUEUE_TIME_LIMITS[Queue.DEFAULT]
    meaning = f"bench.noop as bare, each message with soft_time_limit={_limits.soft} and time_limit={_limits.hard}"
    send_options = {"soft_time_limit": _limits.soft, "time_limit": _limits.hard}


VARIANTS = {"kit": Kit, "bare": Bare, "bare-time-limits": BareTimeLimits, "kit-recycling": KitRecycling}


def feed(variant, worker: harness.Worker, *, published: int, total: int) -> None:
    """Enqueue up to `total` jobs in batches and return once all have run."""
    deadline = time.monotonic() + 120 + (total - published) / 20
    while (done := variant.finished()) < total:
        worker.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{variant.name}: {done} of {total} jobs ran in time; see {worker.log_path}")
        if published < total and published - done < BATCH:
            count = min(BATCH, total - published)
            variant.publish(count)
            published += count
        else:
            time.sleep(0.2)
    variant.check(total)
    time.sleep(SETTLE_SECONDS)


def checkpoints(before: int, after: int) -> list[int]:
    """Job counts at which the RSS is read: `before`, every CHECKPOINT jobs
    after it, and `after`."""
    return [before, *range((before // CHECKPOINT + 1) * CHECKPOINT, after, CHECKPOINT), after]


def measure(variant, *, counts: list[int], log_path: Path) -> dict:
    """RSS readings at each count of jobs run, and the ratios of the last to
    the first."""
    variant.reset()
    readings = {}
    with harness.Worker(
        name=f"memory-{variant.name}",
        settings_module=variant.settings_module,
        queue=variant.queue,
        concurrency=CONCURRENCY,
        log_path=log_path,
        env=variant.worker_env,
        extra_args=variant.worker_args,
    ) as worker:
        feed(variant, worker, published=0, total=counts[0])
        readings[str(counts[0])] = rss_snapshot(worker.process.pid)
        started = time.monotonic()
        for previous, count in itertools.pairwise(counts):
            feed(variant, worker, published=previous, total=count)
            readings[str(count)] = rss_snapshot(worker.process.pid)
        seconds = time.monotonic() - started
    first, last = readings[str(counts[0])], readings[str(counts[-1])]
    # Children are paired in pid order; recycled ones are different processes.
    pairs = list(zip(first["children"].values(), last["children"].values(), strict=True))
    return {
        "readings": readings,
        "children_replaced": first["children"].keys() != last["children"].keys(),
        "ratio_main": last["main"] / first["main"],
        "ratio_children": [end / start for start, end in pairs],
        "seconds_after_the_first_reading": seconds,
    }


def _mib(kib: int) -> str:
    return f"{kib / 1024:7.1f} MiB"


def run(*, quick: bool, before: int | None = None, after: int | None = None, names: list[str] | None = None) -> dict:
    preset = QUICK if quick else FULL
    before = before or preset["before"]
    after = after or preset["after"]
    counts = checkpoints(before, after)
    started_at, scratch, machine = harness.prepare_run()
    variants = [VARIANTS[name](scratch) for name in names or preset["variants"]]
    print(
        f"RSS of a worker ({CONCURRENCY} prefork children) after {before:,} and after {after:,} no-op jobs, "
        f"read at {', '.join(f'{count:,}' for count in counts)}; variants {', '.join(v.name for v in variants)}\n",
        flush=True,
    )

    print(f"{'variant':<16} {'process':<8} {f'after {before:,}':>12} {f'after {after:,}':>12}  after/before")
    results = {}
    for variant in variants:
        found = results[variant.name] = measure(variant, counts=counts, log_path=scratch / f"worker-{variant.name}.log")
        first, last = found["readings"][str(before)], found["readings"][str(after)]
        print(
            f"{variant.name:<16} {'main':<8} {_mib(first['main'])} {_mib(last['main'])}  {found['ratio_main']:.3f}"
            f"   ({after - before:,} jobs in {found['seconds_after_the_first_reading']:.0f} s)"
        )
        pairs = zip(first["children"].values(), last["children"].values(), found["ratio_children"], strict=True)
        for number, (start, end, ratio) in enumerate(pairs, start=1):
            label = f"child {number}" + ("*" if found["children_replaced"] else "")
            print(f"{'':<16} {label:<8} {_mib(start)} {_mib(end)}  {ratio:.3f}", flush=True)
    if any(found["children_replaced"] for found in results.values()):
        print("* not the same process at both readings: the pool replaced its children (recycling).")
    print(f"\nMain process RSS (MiB) at {' / '.join(f'{count:,}' for count in counts)} jobs:")
    for name, found in results.items():
        print(f"{name:<16} " + " ".join(f"{reading['main'] / 1024:.1f}" for reading in found["readings"].values()))

    return {
        "benchmark": "memory",
        "started_at": started_at,
        "machine": machine,
        "parameters": {
            "before": before,
            "after": after,
            "concurrency": CONCURRENCY,
            "pool": "prefork",
            "batch": BATCH,
            "readings_at": counts,
            "settle_seconds": SETTLE_SECONDS,
        },
        "variants": {variant.name: variant.meaning for variant in variants},
        "rss_kib": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.memory", description="Worker memory over many jobs (not a test)."
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK['before']:,} then {QUICK['after']:,} jobs, {' and '.join(QUICK['variants'])}",
    )
    parser.add_argument("--before", type=int, help=f"jobs before the first reading (default {FULL['before']:,})")
    parser.add_argument("--after", type=int, help=f"jobs in all before the second reading (default {FULL['after']:,})")
    parser.add_argument(
        "--variants",
        type=lambda names: names.split(","),
        help=f"comma-separated, of {', '.join(VARIANTS)} (default: all in full mode, kit and bare in quick mode)",
    )
    args = parser.parse_args()
    if unknown := set(args.variants or ()) - set(VARIANTS):
        parser.error(f"unknown variant(s): {', '.join(sorted(unknown))}")
    harness.report(run(quick=args.quick, before=args.before, after=args.after, names=args.variants))


if __name__ == "__main__":
    main()
