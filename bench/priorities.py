"""python -m bench.priorities [--quick] [--backlog N] [--paced N] [--rounds R]

Whether a high-priority job overtakes a backlog. Per variant and round:
empty the tables and the default queue; start a kit worker (2 prefork
children) parked on a queue of its own and, while it starts, enqueue a
backlog of low jobs.noop jobs; once it is up, move it to the default queue;
once it has started the first of them, enqueue a high and a low job together
every PACE_SECONDS (the order alternating), each with job_enqueue as an
application would; wait until every job has run. A job's wait is
Job.started_at - Job.created_at: from its row being written to the worker
starting it, both the machine's wall clock.

- priorities: the kit as configured. Queues are RabbitMQ priority queues
              (x-max-priority 9, jobs/queues.py), high is 9 and low 0, the
              worker holds one message per child, or 8 while its jobs are
              short (jobs.worker_prefetch), starts the ones it holds highest
              priority first (jobs.worker_priority) and acknowledges late,
              so a high job waits for a child to come free.
- all-medium: the same jobs, every one enqueued medium: what the same
              backlog does to them without priorities (the baseline).

The figures compare the paced high jobs with the paced low jobs enqueued
at the same instants. The backlog must outlast the pacing, or late high
jobs would find an empty queue; the run checks that it did.
"""

import argparse
import os
import time
from dataclasses import dataclass

import django

# The models below need Django set up first, on the benchmark's own settings
# (its own database and vhost, bench/settings_kit.py).
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings_kit")
django.setup()

from django.db.models import Max  # noqa: E402

from bench import harness  # noqa: E402
from config.celery_app import app as kit_app  # noqa: E402
from jobs.models import Job, JobStatus  # noqa: E402
from jobs.queues import Priority, Queue  # noqa: E402
from jobs.services import job_enqueue  # noqa: E402

QUICK = {"backlog": 2000, "paced": 100, "rounds": 1}
FULL = {"backlog": 5000, "paced": 200, "rounds": 3}
CONCURRENCY = 2
# The paced jobs must all be enqueued while the backlog lasts (the run
# checks it did): a faster worker drains 2,000 jobs in a few seconds.
PACE_SECONDS = 0.01


@dataclass(frozen=True)
class Variant:
    name: str
    meaning: str
    high: Priority  # the paced "high" jobs'
    low: Priority  # the backlog's and the paced "low" jobs'


VARIANTS = [
    Variant("priorities", "backlog low, paced jobs high and low (9 and 0)", high=Priority.HIGH, low=Priority.LOW),
    Variant(
        "all-medium", "the same jobs, every one medium (5): no priorities", high=Priority.MEDIUM, low=Priority.MEDIUM
    ),
]


def _waits_ms(ids: list) -> list[float]:
    rows = Job.objects.filter(pk__in=ids).values_list("created_at", "started_at")
    return [(started - created).total_seconds() * 1000 for created, started in rows]


def measure(variant: Variant, *, backlog: int, paced: int, log_path) -> dict:
    """Wait times (ms) of the paced high and low jobs, behind a backlog."""
    harness.empty_job_tables()
    harness.purge_queue(kit_app, Queue.DEFAULT.value)
    ids = {"high": [], "low": []}
    with harness.Worker(
        name=f"priorities-{variant.name}",
        settings_module="bench.settings_kit",
        queue=Queue.DEFAULT.value,
        concurrency=CONCURRENCY,
        log_path=log_path,
        parked=True,
    ) as worker:
        # The backlog is enqueued while the worker starts, parked on a queue
        # of its own; it is let at the backlog once it is up.
        harness.enqueue_noops(backlog, priority=variant.low)
        worker.wait_until_up(kit_app)
        worker.consume(kit_app)

        def started() -> bool:
            worker.check_alive()
            return Job.objects.filter(started_at__isnull=False).exists()

        harness.wait_until(started, timeout=60, what=f"the worker to start a job ({log_path})", interval=0.01)
        begin = time.monotonic()
        for tick in range(paced):
            time.sleep(max(0.0, begin + tick * PACE_SECONDS - time.monotonic()))
            pair = [("high", variant.high), ("low", variant.low)]
            for group, priority in pair if tick % 2 == 0 else reversed(pair):
                ids[group].append(job_enqueue(task_name="jobs.noop", priority=priority).pk)
        pacing_seconds = time.monotonic() - begin
        last_paced = Job.objects.filter(pk__in=ids["high"] + ids["low"]).aggregate(last=Max("created_at"))["last"]

        total = backlog + 2 * paced

        def drained() -> bool:
            worker.check_alive()
            return Job.objects.filter(finished_at__isnull=False).count() >= total

        harness.wait_until(drained, timeout=60 + total / 20, what=f"{total} jobs to run ({log_path})")
    if (ok := Job.objects.filter(status=JobStatus.SUCCESS).count()) != total:
        raise RuntimeError(f"Only {ok} of {total} jobs succeeded; see {log_path}.")
    backlog_last_start = Job.objects.exclude(pk__in=ids["high"] + ids["low"]).aggregate(last=Max("started_at"))["last"]
    outlasted = (backlog_last_start - last_paced).total_seconds()
    if outlasted <= 0:
        raise RuntimeError(
            f"The backlog of {backlog} ran out {-outlasted:.2f} s before the last paced job was enqueued: "
            "give it more jobs (--backlog) or fewer paced ones (--paced)."
        )
    return {
        "high_ms": _waits_ms(ids["high"]),
        "low_ms": _waits_ms(ids["low"]),
        "pacing_seconds": pacing_seconds,
        "backlog_outlasted_pacing_seconds": outlasted,
    }


def _ratio(summary: dict) -> float:
    return summary["low"]["p50"] / summary["high"]["p50"]


def run(*, quick: bool, backlog: int | None = None, paced: int | None = None, rounds: int | None = None) -> dict:
    preset = QUICK if quick else FULL
    backlog = backlog or preset["backlog"]
    paced = paced or preset["paced"]
    rounds = rounds or preset["rounds"]
    started_at, scratch, machine = harness.prepare_run()
    print(
        f"Backlog of {backlog:,} jobs.noop, then {paced} high + {paced} low jobs, a pair every "
        f"{PACE_SECONDS * 1000:.0f} ms, while a kit worker ({CONCURRENCY} prefork children) drains it; "
        f"{rounds} round{'s' if rounds > 1 else ''}\n",
        flush=True,
    )

    waits = {variant.name: {"high": [], "low": []} for variant in VARIANTS}
    per_round_ratio: dict[str, list[float]] = {variant.name: [] for variant in VARIANTS}
    measurements = []
    for round_number in range(1, rounds + 1):
        for variant in VARIANTS:
            log_path = scratch / f"worker-{variant.name}-{round_number}.log"
            found = measure(variant, backlog=backlog, paced=paced, log_path=log_path)
            waits[variant.name]["high"] += found["high_ms"]
            waits[variant.name]["low"] += found["low_ms"]
            summary = {group: harness.percentiles(found[f"{group}_ms"]) for group in ("high", "low")}
            per_round_ratio[variant.name].append(_ratio(summary))
            measurements.append({"round": round_number, "variant": variant.name, **found})
            print(
                f"round {round_number}  {variant.name:<11} high p50 {summary['high']['p50']:8.1f} ms  "
                f"low p50 {summary['low']['p50']:8.1f} ms  (the backlog outlasted the pacing by "
                f"{found['backlog_outlasted_pacing_seconds']:.1f} s)",
                flush=True,
            )

    summary = {
        name: {group: harness.percentiles(values) for group, values in groups.items()} for name, groups in waits.items()
    }
    ratios = {
        name: {"of_pooled_p50s": _ratio(summary[name]), "per_round": harness.spread(per_round_ratio[name])}
        for name in summary
    }

    print(f"\n{'wait, ms':<22} {'high p50':>9} {'high p99':>9} {'low p50':>9} {'low p99':>9}   low p50 / high p50")
    for name, groups in summary.items():
        r = ratios[name]
        print(
            f"{name:<22} {groups['high']['p50']:9.1f} {groups['high']['p99']:9.1f} "
            f"{groups['low']['p50']:9.1f} {groups['low']['p99']:9.1f}   {r['of_pooled_p50s']:8.1f}  "
            f"(per round {r['per_round']['min']:.1f} - {r['per_round']['max']:.1f})"
        )
    print('("high" and "low" in all-medium are the same paced jobs, enqueued medium.)')

    return {
        "benchmark": "priorities",
        "started_at": started_at,
        "machine": machine,
        "parameters": {
            "backlog": backlog,
            "paced_pairs": paced,
            "pace_seconds": PACE_SECONDS,
            "rounds": rounds,
            "concurrency": CONCURRENCY,
            "pool": "prefork",
        },
        "variants": {variant.name: variant.meaning for variant in VARIANTS},
        "measurements": measurements,
        "summary_wait_ms": summary,
        "ratios_low_over_high_p50": ratios,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.priorities", description="High jobs behind a backlog (not a test)."
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"a backlog of {QUICK['backlog']:,}, {QUICK['paced']} pairs, {QUICK['rounds']} rounds",
    )
    parser.add_argument(
        "--backlog", type=int, help=f"low jobs waiting when the worker starts (default {FULL['backlog']:,})"
    )
    parser.add_argument(
        "--paced", type=int, help=f"high (and low) jobs enqueued while it drains (default {FULL['paced']})"
    )
    parser.add_argument(
        "--rounds", type=int, help=f"rounds, each running every variant once (default {FULL['rounds']})"
    )
    args = parser.parse_args()
    harness.report(run(quick=args.quick, backlog=args.backlog, paced=args.paced, rounds=args.rounds))


if __name__ == "__main__":
    main()
