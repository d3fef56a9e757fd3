"""Pieces every benchmark shares: the bench vhost and database, worker
processes, a description of the machine, and reporting (table and JSON)."""

import argparse
import base64
import gc
import json
import math
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from urllib.parse import quote, unquote, urlparse

import psycopg

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"


# RabbitMQ's management API (DESIGN.md, "The machine": the management
# plugin is enabled), on the broker's host.
MANAGEMENT_PORT = 15672


def reset_vhost(broker_url: str) -> None:
    """Delete and recreate the broker URL's vhost: no message or queue
    (with arguments from an older run) survives into this one.

    Through the management API, as the URL's user: a `rabbitmqctl` call
    starts an Erlang VM (about a third of a second each, three per reset,
    thirteen resets in a `make bench`). With `rabbitmqctl` where the API
    does not answer."""
    url = urlparse(broker_url)
    vhost = unquote(url.path.lstrip("/"))
    if vhost in ("", "/"):
        raise SystemExit(f"Refusing to reset RabbitMQ's default vhost ({broker_url}); give the bench its own.")
    user, password = unquote(url.username or "guest"), unquote(url.password or "guest")
    try:
        _reset_vhost_by_api(f"http://{url.hostname or '127.0.0.1'}:{MANAGEMENT_PORT}/api", vhost, user, password)
    except OSError as exc:  # URLError, a refused connection, a timeout
        if isinstance(exc, urllib.error.HTTPError):
            raise  # the API answered, and refused: no silent second way
        rabbitmqctl = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
        subprocess.run([rabbitmqctl, "-q", "delete_vhost", vhost], capture_output=True)
        for command in (["add_vhost", vhost], ["set_permissions", "-p", vhost, user, ".*", ".*", ".*"]):
            subprocess.run([rabbitmqctl, "-q", *command], check=True, capture_output=True)


def _reset_vhost_by_api(api: str, vhost: str, user: str, password: str) -> None:
    authorization = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    name = quote(vhost, safe="")

    def call(method: str, path: str, body: dict | None = None, *, missing_ok: bool = False) -> None:
        request = urllib.request.Request(
            f"{api}{path}",
            method=method,
            data=json.dumps(body or {}).encode(),
            headers={"Authorization": authorization, "Content-Type": "application/json"},
        )
        try:
            urllib.request.urlopen(request, timeout=30).close()
        except urllib.error.HTTPError as exc:
            if not (missing_ok and exc.code == 404):
                raise

    call("DELETE", f"/vhosts/{name}", missing_ok=True)
    call("PUT", f"/vhosts/{name}")
    call("PUT", f"/permissions/{name}/{quote(user, safe='')}", {"configure": ".*", "write": ".*", "read": ".*"})


def ensure_database(db: dict) -> None:
    """Create the PostgreSQL database named in Django's settings if missing."""
    params = {
        "host": db["HOST"] or "127.0.0.1",
        "port": db["PORT"] or 5432,
        "user": db["USER"],
        "password": db["PASSWORD"],
    }
    with psycopg.connect(dbname="postgres", autocommit=True, **params) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [db["NAME"]]).fetchone():
            conn.execute(f'CREATE DATABASE "{db["NAME"]}"')


def wait_until(condition: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"Timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


# A queue nothing is published to, one per worker name (each variant's
# settings declare queues with their own arguments). A worker started on it
# is up and idle until Worker.consume moves it to its real queue, so that
# what the worker costs to start (imports, forking its pool) stays out of a
# CPU measurement.
PARKED_QUEUE = "bench-parked-{name}"


class Worker:
    """A real `celery worker` process under a given settings module; a context
    manager that kills it once the measurement is over (a warm shutdown if
    the measurement failed, so its log is complete). With parked=True it
    consumes nothing until consume() is called."""

    def __init__(
        self,
        *,
        name: str,
        settings_module: str,
        queue: str,
        concurrency: int,
        log_path: Path,
        env: dict | None = None,
        extra_args: tuple[str, ...] = (),
        parked: bool = False,
    ):
        self.queue = queue
        self.nodename = f"bench-{name}@{socket.gethostname()}"  # what Celery makes of bench-NAME@%h
        consumes = PARKED_QUEUE.format(name=name) if parked else queue
        self.command = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "-P",
            "prefork",
            "-c",
            str(concurrency),
            "-Q",
            consumes,
            "-n",
            self.nodename,
            # No chatter between workers, and no per-task INFO lines: logging
            # would cost every variant the same and blur the difference.
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-l",
            "WARNING",
            *extra_args,
        ]
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": settings_module,
            "LOG_LEVEL": "WARNING",
            **(env or {}),
        }
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> "Worker":
        self.log = open(self.log_path, "ab")
        # Its own session, so the pool children can be killed with it.
        self.process = subprocess.Popen(
            self.command, cwd=REPO, env=self.env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )
        return self

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(f"Worker exited with {self.process.returncode}; see {self.log_path}")

    def wait_until_up(self, app, *, timeout: float = 60) -> None:
        """Until the worker answers a ping: its pool is forked and its event
        loop runs. `app`: a Celery app on the worker's broker."""

        def answers() -> bool:
            self.check_alive()
            return bool(app.control.ping(destination=[self.nodename], timeout=0.1))

        # A ping before the worker listens waits its whole timeout: short
        # ones, often, find it up sooner (there are dozens of workers to
        # start in a `make bench`). An idle worker answers within a few
        # milliseconds; found 0.04-0.07 s after its "ready." line with pings
        # of 0.1 s every 20 ms, 0.15-0.28 s with 0.25 s every 50 ms. A reply
        # that comes after its ping's timeout is dropped (each ping has its
        # own ticket), and the next ping finds the worker.
        wait_until(answers, timeout=timeout, what=f"{self.nodename} to answer a ping ({self.log_path})", interval=0.02)

    def consume(self, app) -> None:
        """Start a parked worker on its real queue."""
        replies = app.control.add_consumer(self.queue, destination=[self.nodename], reply=True, timeout=5)
        if not any("ok" in reply.get(self.nodename, {}) for reply in replies):
            raise RuntimeError(f"{self.nodename} did not start consuming {self.queue}: {replies}")

    def __exit__(self, exc_type, *exc_info) -> None:
        if exc_type is None and self.process.poll() is None:
            # The measurement is over and read: nothing the worker still
            # holds matters (each run purges its queue first), and a warm
            # shutdown costs two seconds a worker, a minute of `make bench`.
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self.log.close()


def describe_machine(*, rabbitmq_version: str, postgresql_version: str) -> dict:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "load_average_at_start": [round(load, 2) for load in os.getloadavg()],
        "rabbitmq": rabbitmq_version,
        "postgresql": postgresql_version,
        "python": platform.python_version(),
        **{name: version(name) for name in ("celery", "kombu", "django", "django-celery-results")},
    }


def spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def write_results(data: dict) -> Path:
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"{data['started_at'].replace(':', '')}.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def report(results: dict) -> None:
    """Write a benchmark's results JSON and say where: a benchmark's last
    call, after which its process only exits."""
    print(f"\nResults: {write_results(results).relative_to(REPO)}")
    exit_without_collecting()


def exit_without_collecting() -> None:
    """Let the process exit without the interpreter's final garbage
    collections, for a process whose measuring is over. At exit they walk
    every object Django, Celery and the run left (0.3-0.4 s of a process's
    exit on this 2-core machine, in each benchmark's process and each of the
    peers' measurements); frozen objects are skipped. Exit is otherwise as
    before: atexit handlers run, files are flushed and closed."""
    gc.freeze()


def rounds_parser(*, prog: str, description: str, quick: dict, full: dict) -> argparse.ArgumentParser:
    """The command line of a benchmark that runs N jobs per variant in
    rounds: --quick, --jobs and --rounds, with the sizes of its presets."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--quick", action="store_true", help=f"{quick['jobs']:,} jobs x {quick['rounds']} rounds")
    parser.add_argument("--jobs", type=int, help=f"jobs per variant and round (default {full['jobs']:,})")
    parser.add_argument(
        "--rounds", type=int, help=f"rounds, each running every variant once (default {full['rounds']})"
    )
    return parser


def run_dir(started_at: str) -> Path:
    """Worker logs and scratch files of one run, next to its JSON."""
    path = RESULTS_DIR / started_at.replace(":", "")
    path.mkdir(parents=True, exist_ok=True)
    return path


def now_stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def print_machine(machine: dict) -> None:
    print(
        f"{machine['cores']} cores ({machine['cpu']}), load {machine['load_average_at_start']}; "
        f"RabbitMQ {machine['rabbitmq']}, PostgreSQL {machine['postgresql']}, Python {machine['python']}, "
        f"Celery {machine['celery']}, kombu {machine['kombu']}, Django {machine['django']}, "
        f"django-celery-results {machine['django-celery-results']}"
    )


def print_table(rows: list[tuple[str, dict]], unit: str) -> None:
    width = max(len(name) for name, _ in rows)
    print(f"{'variant':<{width}}  {unit + ' median':>14}  {'min - max':>17}")
    for name, s in rows:
        print(f"{name:<{width}}  {s['median']:>14,.0f}  {s['min']:>7,.0f} - {s['max']:>7,.0f}")


def service_versions() -> tuple[str, str]:
    """RabbitMQ's and PostgreSQL's versions, as the servers report them."""
    from django.db import connection

    from config.celery_app import app

    with app.connection_for_write() as conn:
        conn.connect()
        rabbitmq = conn.connection.server_properties.get("version", "?")
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        postgresql = cursor.fetchone()[0]
    return rabbitmq, postgresql


def kit_ratios(
    rates: dict[str, list[float]], summary: dict[str, dict], others: tuple[str, ...], *, kit: str = "kit"
) -> dict:
    """The rate of the variant named `kit` over each other variant's: of the
    medians, and the spread of the per-round ratios (the variants of a round
    ran back to back, so a per-round ratio cancels the machine's slow
    patches)."""
    ratios = {}
    for other in others:
        per_round = [mine / theirs for mine, theirs in zip(rates[kit], rates[other], strict=True)]
        ratios[f"{kit}/{other}"] = {
            "of_medians": summary[kit]["median"] / summary[other]["median"],
            "per_round": spread(per_round),
        }
    return ratios


# In quick mode, the slowest baselines (the common default, one job per mail,
# one enqueue per call) run this share of the items: they took half of `make
# bench`'s time, and their rate is steady from the first item (no warm-up for
# a shorter run to magnify), so the rate, and so the ratio, stays the same.
QUICK_SLOW_SHARE = 0.3
# And the slowest of all (a sixth of the kit's rate or less, where a
# benchmark names them) this share.
QUICK_SLOWEST_SHARE = 0.1


def variant_counts(
    names: list[str], count: int, *, slow: tuple[str, ...], quick: bool, slowest: tuple[str, ...] = ()
) -> dict[str, int]:
    """Items each variant runs: `count`, or in quick mode QUICK_SLOW_SHARE
    of it for the `slow` ones and QUICK_SLOWEST_SHARE for the `slowest`."""

    def share(name: str) -> float:
        if not quick:
            return 1
        return QUICK_SLOWEST_SHARE if name in slowest else QUICK_SLOW_SHARE if name in slow else 1

    return {name: round(count * share(name)) for name in names}


def describe_counts(counts: dict[str, int]) -> str:
    """'1,000' or '1,000 (common-default: 300)', for a benchmark's header."""
    most = max(counts.values())
    fewer = [f"{name}: {count:,}" for name, count in counts.items() if count != most]
    return f"{most:,}" + (f" ({', '.join(fewer)})" if fewer else "")


def round_order(names: list[str], round_number: int) -> list[str]:
    """The order of the variants in round `round_number` (from 1): the
    first round in the given order, each next one starting one variant
    later (A B C, B C A, C A B, A B C, ...)."""
    start = (round_number - 1) % len(names)
    return [*names[start:], *names[:start]]


def rate_rounds(
    names: list[str],
    *,
    rounds: int,
    count: int | dict[str, int],
    unit: str,
    measure: Callable[[str, int], float],
    decimals: int = 0,
) -> tuple[dict[str, list[float]], list[dict]]:
    """Every variant once per round, back to back, so load from elsewhere
    lands on all of them alike; the order rotates round by round (round r,
    counted from 0, starts at the variant r mod n of `names` and goes on in
    their order), so that no variant always runs first, on a machine that
    may have sat idle or just finished another variant's clean-up, or
    always last. `measure(name, round_number)` returns the seconds the
    variant took for `count` items (`unit`: "jobs", "images", ...; a dict
    gives each variant its own count). Prints a line per run; returns the
    rates per variant, round by round in each variant's list (so the i-th
    rates of two variants ran in the same round, as kit_ratios pairs them),
    and one measurement per run, in the order they ran."""
    counts = count if isinstance(count, dict) else dict.fromkeys(names, count)
    width = max(len(name) for name in names)
    rates: dict[str, list[float]] = {name: [] for name in names}
    measurements = []
    for round_number in range(1, rounds + 1):
        for name in round_order(names, round_number):
            seconds = measure(name, round_number)
            rate = counts[name] / seconds
            rates[name].append(rate)
            measurements.append(
                {"round": round_number, "variant": name, "seconds": seconds, f"{unit}_per_second": rate}
            )
            print(
                f"round {round_number}  {name:<{width}} {rate:9,.{decimals}f} {unit}/s  ({seconds:.2f} s)", flush=True
            )
    return rates, measurements


def print_ratios(ratios: dict, *, width: int = 12) -> None:
    for name, ratio in ratios.items():
        r = ratio["per_round"]
        print(f"{name:<{width}} {ratio['of_medians']:5.2f}  (per round {r['min']:.2f} - {r['max']:.2f})")


def prepare_run() -> tuple[str, Path, dict]:
    """What a benchmark does first, on the Django settings it set up (the
    bench's own database and vhost): the vhost recreated, the database
    created and migrated, the machine described and printed. Returns the
    run's timestamp, its scratch folder and the machine."""
    from django.conf import settings
    from django.core.management import call_command

    started_at = now_stamp()
    scratch = run_dir(started_at)
    reset_vhost(settings.CELERY_BROKER_URL)
    ensure_database(settings.DATABASES["default"])
    call_command("migrate", verbosity=0, interactive=False)
    rabbitmq, postgresql = service_versions()
    machine = describe_machine(rabbitmq_version=rabbitmq, postgresql_version=postgresql)
    print_machine(machine)
    return started_at, scratch, machine


def percentiles(values: list[float]) -> dict:
    """p50, p99 and the maximum by nearest rank (of 200 values, p99 is the
    198th smallest), so every figure is one that was measured."""
    ordered = sorted(values)

    def rank(percent: float) -> float:
        return ordered[math.ceil(percent / 100 * len(ordered)) - 1]

    return {"count": len(ordered), "p50": rank(50), "p99": rank(99), "max": ordered[-1]}


def empty_job_tables() -> None:
    """Empty the Job and TaskResult tables: the same index sizes and no dead
    rows from the previous variant. CASCADE: domain rows that point at jobs
    go too (in the bench's own database nothing else lives there)."""
    from django.db import connection
    from django_celery_results.models import TaskResult

    from jobs.models import Job

    tables = ", ".join(connection.ops.quote_name(model._meta.db_table) for model in (Job, TaskResult))
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {tables} CASCADE")


def purge_queue(app, name: str) -> None:
    """Declare the app's queue `name` (with its arguments) and empty it."""
    with app.connection_for_write() as conn:
        queue = app.amqp.queues[name](conn.default_channel)
        queue.declare()
        queue.purge()


def ready_messages(app, name: str) -> int:
    """Messages waiting on the app's queue `name` (not counting those a
    consumer holds)."""
    with app.connection_for_write() as conn:
        return conn.default_channel.queue_declare(name, passive=True).message_count


def wait_for_messages(app, name: str, count: int) -> None:
    """Wait until `count` messages are ready on the queue: published without
    confirms, the last ones may still be on their way when the loop returns
    (what the publisher saves, and risks)."""
    wait_until(lambda: ready_messages(app, name) == count, timeout=30, what=f"{count} messages on {name}")


def plain_celery_app(settings_module: str):
    """A second Celery app configured like a baseline's workers (e.g.
    bench.settings_bare); the process-wide Django settings stay the kit's."""
    from celery import Celery

    app = Celery(f"bench-{settings_module}", set_as_current=False)
    app.config_from_object(settings_module, namespace="CELERY")
    return app


def read_stamps(path: Path) -> list[tuple[float, float]]:
    """The (start, end) wall-clock times that bench/tasks.py appends per
    task to BENCH_STAMP_FILE, in the order the tasks finished."""
    if not path.exists():
        return []
    return [(float(start), float(end)) for start, end in (line.split() for line in path.read_text().splitlines())]


def enqueue_noops(count: int, *, priority: str = "medium") -> None:
    """Enqueue `count` jobs.noop jobs with job_enqueue_many (rows inserted
    together, messages confirmed by the broker in bulk) and check that the
    broker confirmed every one."""
    from jobs.models import Job
    from jobs.services import job_enqueue_many

    ids = [job.pk for job in job_enqueue_many(task_name="jobs.noop", calls=[((), {})] * count, priority=priority)]
    # queued_at is set once the broker confirmed the message, whether or not
    # a worker has started the job since.
    unconfirmed = sum(
        Job.objects.filter(pk__in=ids[start : start + 1000], queued_at__isnull=True).count()
        for start in range(0, len(ids), 1000)
    )
    if unconfirmed:
        raise RuntimeError(f"{unconfirmed} of {count} jobs did not reach the broker.")
