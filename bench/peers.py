"""The kit against what a team would otherwise pick: the same no-op job
through Procrastinate, django-tasks' database backend and django-q2's ORM
broker (at Django's default connection handling, CONN_MAX_AGE=0, and with
CONN_MAX_AGE=600), RQ, and Dramatiq on RabbitMQ without results (the
untracked reference), beside the kit (its default and
JOBS_DURABLE_TRACKING=true) and bare Celery, variants interleaved round by
round, the order rotated each round (bench.harness.rate_rounds).

Each variant: 2 worker processes (the kit and bare Celery: one worker with 2
prefork children), the jobs enqueued up front with no worker consuming,
counted done in the variant's own store, the window from the first job's
start to the last job's end as that store recorded it, and the CPU per job
of the workers and of the servers the variant uses (PostgreSQL for its own
database only, RabbitMQ, Redis; bench/cpu.py) from the moment the idle
workers were let at the jobs until the last was counted.
The kit and bare Celery run here (bench/throughput.py measures them); the
peers run in a virtualenv of their own (.venv-peers, `make peers-venv`),
one measurement per process (bench/peers_app/run.py), which reports its
figures and every setting it used.

The summary gives kit/fastest tracked peer (all peers that record each job:
every one but Dramatiq) and kit-durable/fastest tracked peer, durable
against durable: the fastest of the peers whose record survives a crash of
the machine once written (the three on PostgreSQL, whose commits wait for
the disk; not RQ, in Redis' memory), each with the peer's name.
"""

import json
import os
import subprocess
from pathlib import Path

from django.conf import settings

# First: it sets Django up on the kit's bench settings (bench/settings_kit.py).
from bench import (
    cpu,
    harness,
    throughput,
)

PEERS_PYTHON = Path(os.environ.get("BENCH_PEERS_PYTHON", harness.REPO / ".venv-peers" / "bin" / "python"))
PEERS_ENV = {
    "DJANGO_SETTINGS_MODULE": "bench.peers_app.settings",
    "BENCH_PEERS_DATABASE_URL": os.environ.get(
        "BENCH_PEERS_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/kit_bench_peers"
    ),
    "BENCH_PEERS_AMQP_URL": os.environ.get("BENCH_PEERS_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/kit-bench-peers"),
    "BENCH_PEERS_REDIS_URL": os.environ.get("BENCH_PEERS_REDIS_URL", "redis://127.0.0.1:6379/14"),
}
# The servers whose CPU is counted, each for the variants that use it only:
# on a machine shared with other work, RabbitMQ's and Redis' CPU while, say,
# django-tasks runs is someone else's (PostgreSQL's is counted for the
# variant's own database only, bench/cpu.py).
SERVERS = ("postgresql", "rabbitmq", "redis")
KIT_SERVERS = {"kit": ("postgresql", "rabbitmq"), "kit-durable": ("postgresql", "rabbitmq"), "bare": ("rabbitmq",)}
CONCURRENCY = 2


def every_part(cost: dict[str, float]) -> dict[str, float]:
    """A variant's CPU per job with a column for every server (0 for one it
    does not use), so that the table lines up."""
    return {part: cost.get(part, 0.0) for part in ("worker main", "worker children", *SERVERS, "total")}


class KitDurable(throughput.Kit):
    name = "kit-durable"
    meaning = "the kit with JOBS_DURABLE_TRACKING=true: every tracking commit waits for the WAL flush"
    worker_env = {"JOBS_DURABLE_TRACKING": "true"}


class Peer:
    """A peer measured by bench/peers_app/run.py in the peers' virtualenv."""

    def __init__(self, name: str, system: str, meaning: str, *, tracked: bool, durable: bool, conn_max_age=None):
        self.name, self.system, self.meaning = name, system, meaning
        self.tracked, self.durable, self.conn_max_age = tracked, durable, conn_max_age
        self.settings: dict = {}

    def measure(self, *, jobs: int, log_dir: Path) -> tuple[float, dict[str, float]]:
        env = {**os.environ, **PEERS_ENV}
        if self.conn_max_age is not None:
            env["BENCH_PEERS_CONN_MAX_AGE"] = str(self.conn_max_age)
        command = [str(PEERS_PYTHON), "-m", "bench.peers_app.run", self.system, "--jobs", str(jobs)]
        done = subprocess.run(
            [*command, "--log-dir", str(log_dir)], cwd=harness.REPO, env=env, capture_output=True, text=True
        )
        if done.returncode != 0:
            raise RuntimeError(f"{self.name} failed:\n{done.stderr[-3000:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        self.settings = {"stores": result["stores"], **result["settings"]}
        return result["seconds"], result["cpu_ms_per_job"]


PEERS = [
    Peer(
        "procrastinate",
        "procrastinate",
        "Procrastinate on PostgreSQL (Django integration), 2 worker processes",
        tracked=True,
        durable=True,
    ),
    *(
        Peer(
            f"django-tasks-conn{age}",
            "django-tasks",
            f"django-tasks' database backend (django-tasks-db), 2 db_worker processes, CONN_MAX_AGE={age}",
            tracked=True,
            durable=True,
            conn_max_age=age,
        )
        for age in (0, 600)
    ),
    *(
        Peer(
            f"django-q2-conn{age}",
            "django-q2",
            f"django-q2 on its ORM broker (PostgreSQL), a cluster of 2 workers, CONN_MAX_AGE={age}",
            tracked=True,
            durable=True,
            conn_max_age=age,
        )
        for age in (0, 600)
    ),
    Peer("rq", "rq", "RQ on Redis, 2 worker processes, a fork per job", tracked=True, durable=False),
    Peer(
        "dramatiq",
        "dramatiq",
        "Dramatiq on RabbitMQ, no results: 2 processes (8 threads each)",
        tracked=False,
        durable=False,
    ),
]

# In quick mode the slowest peers run fewer jobs, since their rate is steady
# from the first jobs: RQ (a sixth of the kit's rate or less in the runs of
# BENCHMARKS.md) QUICK_SLOW_SHARE of them, and the two at Django's default
# connection handling (a sixth and a fourteenth) QUICK_SLOWEST_SHARE, where
# they took a third of the quick run. The peers that can be the fastest run
# as many as the kit.
SLOW = ("rq",)
SLOWEST = ("django-tasks-conn0", "django-q2-conn0")


def kit_settings(variant) -> dict:
    return {
        "settings_module": variant.settings_module,
        "worker_env": variant.worker_env,
        "worker": f"celery worker -P prefork -c {CONCURRENCY}, no gossip, mingle, heartbeat or events",
        "conn_max_age": settings.DATABASES["default"]["CONN_MAX_AGE"],
        "JOBS_DURABLE_TRACKING": variant.worker_env.get("JOBS_DURABLE_TRACKING", settings.JOBS_DURABLE_TRACKING),
        **{
            name: getattr(settings, name, None)
            for name in (
                "CELERY_TASK_ACKS_LATE",
                "CELERY_WORKER_PREFETCH_MULTIPLIER",
                "CELERY_DB_REUSE_MAX",
                "JOBS_BATCHED_ENDS",
            )
        },
        "prefetch": "1 per child, 8 while the jobs are short (jobs.worker_prefetch)",
    }


def bare_settings(variant) -> dict:
    conf = variant.app.conf
    return {
        "settings_module": variant.settings_module,
        "worker": f"celery worker -P prefork -c {CONCURRENCY}, no gossip, mingle, heartbeat or events",
        "result_backend": conf.result_backend,
        "task_acks_late": conf.task_acks_late,
        "worker_prefetch_multiplier": conf.worker_prefetch_multiplier,
        "stores": "nothing; the worker stamps each task's start and end in a file (bench/tasks.py)",
    }


def fastest(names: list[str], summary: dict) -> str:
    return max(names, key=lambda name: summary[name]["median"])


QUICK = {"jobs": 1000, "rounds": 2}
FULL = {"jobs": 3000, "rounds": 3}


def run(*, quick: bool, jobs: int | None = None, rounds: int | None = None) -> dict:
    if not PEERS_PYTHON.exists():
        raise SystemExit(f"No peers' virtualenv at {PEERS_PYTHON}: run `make peers-venv` first.")
    preset = QUICK if quick else FULL
    jobs = jobs or preset["jobs"]
    rounds = rounds or preset["rounds"]
    # The peers' versions are listed while the rest is prepared (half a
    # second each, on the second core).
    freeze = subprocess.Popen(
        [str(PEERS_PYTHON), "-m", "pip", "freeze", "--disable-pip-version-check"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    started_at, scratch, machine = harness.prepare_run()
    harness.reset_vhost(PEERS_ENV["BENCH_PEERS_AMQP_URL"])
    subprocess.run(
        [str(PEERS_PYTHON), "-m", "bench.peers_app.run", "prepare"],
        cwd=harness.REPO,
        env={**os.environ, **PEERS_ENV},
        check=True,
    )
    machine["peers"] = freeze.communicate()[0].split()

    kit_variants = {variant.name: variant for variant in (throughput.Kit(), KitDurable(), throughput.Bare(scratch))}
    peers = {peer.name: peer for peer in PEERS}
    names = [*kit_variants, *peers]
    counts = harness.variant_counts(names, jobs, slow=SLOW, slowest=SLOWEST, quick=quick)
    print(
        f"{harness.describe_counts(counts)} no-op jobs per variant and round, {rounds} rounds, "
        f"{CONCURRENCY} worker processes each\n",
        flush=True,
    )

    cpu_costs: dict[str, list[dict[str, float]]] = {name: [] for name in names}

    def run_variant(name: str, round_number: int) -> float:
        if name in peers:
            seconds, cost = peers[name].measure(jobs=counts[name], log_dir=scratch / f"{name}-{round_number}")
        else:
            log_path = scratch / f"worker-{name}-{round_number}.log"
            seconds, cost = throughput.measure(
                kit_variants[name],
                jobs=counts[name],
                concurrency=CONCURRENCY,
                log_path=log_path,
                servers=KIT_SERVERS[name],
                databases=(settings.DATABASES["default"]["NAME"],),
            )
        cpu_costs[name].append(every_part(cost))
        return seconds

    rates, measurements = harness.rate_rounds(names, rounds=rounds, count=counts, unit="jobs", measure=run_variant)
    for measurement in measurements:
        measurement["cpu_ms_per_job"] = cpu_costs[measurement["variant"]][measurement["round"] - 1]
    cpu_summary = {name: cpu.median(costs) for name, costs in cpu_costs.items()}
    summary = {name: harness.spread(values) for name, values in rates.items()}

    tracked = [peer.name for peer in PEERS if peer.tracked]
    durable = [peer.name for peer in PEERS if peer.tracked and peer.durable]
    fastest_tracked, fastest_durable = fastest(tracked, summary), fastest(durable, summary)
    headline = {
        "kit/fastest tracked peer": {
            "peer": fastest_tracked,
            **harness.kit_ratios(rates, summary, (fastest_tracked,))[f"kit/{fastest_tracked}"],
        },
        "kit-durable/fastest tracked peer": {
            "peer": fastest_durable,
            **harness.kit_ratios(rates, summary, (fastest_durable,), kit="kit-durable")[
                f"kit-durable/{fastest_durable}"
            ],
        },
    }
    ratios = harness.kit_ratios(rates, summary, tuple(name for name in names if name != "kit"))
    ratios.update(harness.kit_ratios(rates, summary, ("bare",), kit="kit-durable"))
    cpu_ratios = {
        f"{name}/bare": cpu_summary[name]["total"] / cpu_summary["bare"]["total"] for name in names if name != "bare"
    }

    print()
    harness.print_table([(name, summary[name]) for name in names], unit="jobs/s")
    print()
    for label, ratio in headline.items():
        r = ratio["per_round"]
        durable = ", the fastest durable one" if label.startswith("kit-durable") else ""
        print(
            f"{label}: {ratio['of_medians']:.2f} ({ratio['peer']}{durable}; per round {r['min']:.2f} - {r['max']:.2f})"
        )
    print()
    harness.print_ratios(ratios, width=26)
    print()
    cpu.print_table(cpu_summary, unit="job", baseline="bare")

    variant_settings = {name: kit_settings(variant) for name, variant in kit_variants.items() if name != "bare"}
    variant_settings["bare"] = bare_settings(kit_variants["bare"])
    variant_settings.update({name: peer.settings for name, peer in peers.items()})
    return {
        "benchmark": "peers",
        "started_at": started_at,
        "machine": machine,
        "parameters": {"jobs": counts, "rounds": rounds, "worker_processes": CONCURRENCY},
        "variants": {
            **{name: variant.meaning for name, variant in kit_variants.items()},
            **{name: peer.meaning for name, peer in peers.items()},
        },
        "tracked_peers": tracked,
        "durable_tracked_peers": durable,
        "settings": variant_settings,
        "measurements": measurements,
        "summary_jobs_per_second": summary,
        "cpu_ms_per_job_median": cpu_summary,
        "cpu_per_job_over_bare": cpu_ratios,
        "ratios_headline": headline,
        "ratios": ratios,
    }


def main() -> None:
    parser = harness.rounds_parser(
        prog="python -m bench.peers",
        description="The kit against its peers, tracked and not (not a test).",
        quick=QUICK,
        full=FULL,
    )
    args = parser.parse_args()
    harness.report(run(quick=args.quick, jobs=args.jobs, rounds=args.rounds))


if __name__ == "__main__":
    main()
