"""python -m bench.embedded [--quick] [--jobs N] [--rounds R]

The embedded default as `make run` runs it: `manage.py up` (web app, both
worker groups with their default concurrency, beat, Flower, SMTP sink) on
SQLite in a fresh var directory, measured over HTTP like a first user does.
The SQLite file there is a copy of one migrated once per run, with the
bench's superuser and API token (migrated_database), so `up` finds nothing
to migrate; each stack is stopped with Ctrl-C twice (killed, not drained)
once its figures are read.

- drain:   POST /api/jobs/bulk/ with N jobs.noop, then the time until the
           last of them is SUCCESS (read from the SQLite file): jobs/s.
- latency: POST /api/jobs/ {"task": "jobs.noop"} one at a time on an idle
           stack (IDLE_SECONDS between jobs), from sending the POST to
           Job.started_at, written by the worker child as the task begins.

Variants, each a whole `manage.py up` of its own, one after the other:

- embedded:       the kit's filesystem broker (jobs/filesystem_broker.py).
- rabbitmq:       the same stack with CELERY_BROKER_URL on RabbitMQ (a vhost
                  of the bench's own), still SQLite: only the broker differs.
- kombu-filesystem: kombu's own filesystem transport, what the embedded
                  default used before (bench/settings_embedded_kombu.py);
                  it drains about a job a second, so it runs SLOW_SHARE
                  (2%) of the drained jobs and three times that share (at
                  least three) of the timed ones.

Needs RabbitMQ on loopback (DESIGN.md, "The machine"); no PostgreSQL.
"""

import json
import os
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench import harness

QUICK = {"jobs": 500, "rounds": 1, "latency_jobs": 30}
FULL = {"jobs": 2000, "rounds": 3, "latency_jobs": 100}
BROKER_URL = os.environ.get("BENCH_EMBEDDED_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/kit-bench-embedded")
# The old transport takes a second per couple of jobs: this share of them
# (its rate is steady from the first job, and a second a job is far from
# the others either way).
SLOW_SHARE = 0.02
SLOW = ("kombu-filesystem",)
# Long enough for the workers to settle after the last job (the kit's
# filesystem broker backs off to its slowest poll within 50 ms); 200 ms
# cost `make bench` 8 s more and measured the same.
IDLE_SECONDS = 0.1
WARMUP_JOBS = 5
WARMUP_JOBS_SLOW = 2
TIMEOUT_SECONDS = 600
# Set by the bench's caller for the kit's tests, never wanted by a first run.
NOT_INHERITED = (
    "DATABASE_URL",
    "CELERY_BROKER_URL",
    "CELERY_WORKER_SEND_TASK_EVENTS",
    "DJANGO_SECRET_KEY",
    "DJANGO_ALLOWED_HOSTS",
    "DJANGO_DEBUG",
    "DJANGO_SETTINGS_MODULE",
    "LOG_LEVEL",
    "EMAIL_HOST",
    "EMAIL_PORT",
)
VARIANTS = {
    "embedded": {"settings": "config.settings.local", "broker": None},
    "rabbitmq": {"settings": "config.settings.local", "broker": BROKER_URL},
    "kombu-filesystem": {"settings": "bench.settings_embedded_kombu", "broker": None},
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def stack_env(*, settings_module: str, var_dir: Path) -> dict:
    """The environment of a first run's `manage.py` in `var_dir`."""
    env = {name: value for name, value in os.environ.items() if name not in NOT_INHERITED}
    env.update(
        DJANGO_SETTINGS_MODULE=settings_module,
        KIT_VAR_DIR=str(var_dir),
        DJANGO_SUPERUSER_USERNAME="bench",
        DJANGO_SUPERUSER_PASSWORD=secrets.token_hex(12),
        PYTHONUNBUFFERED="1",
    )
    return env


@dataclass(frozen=True)
class Database:
    """A migrated SQLite file with the bench's superuser and its API token."""

    path: Path
    token: str


def migrated_database(var_dir: Path) -> Database:
    """What `up` makes of a fresh var directory before it starts anything
    (the migrations, the superuser of DJANGO_SUPERUSER_USERNAME), plus the
    user's API token: made once per run and copied into each stack's fresh
    var directory, instead of migrating a new SQLite file three times
    (about a second and a half each) and starting Django again for each
    token."""
    code = (
        "from django.core.management import call_command; "
        "from jobs.management.commands.ensure_admin import admin_ensure; "
        "from rest_framework.authtoken.models import Token; "
        "call_command('migrate', interactive=False, verbosity=0); "
        "account = admin_ensure(); "
        "from django.contrib.auth.models import User; "
        "print(Token.objects.get_or_create(user=User.objects.get(username=account.username))[0].key); "
        # The final garbage collections at exit, skipped (0.3 s).
        "import gc; gc.freeze()"
    )
    done = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=harness.REPO,
        env=stack_env(settings_module="config.settings.local", var_dir=var_dir),
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"Could not prepare the SQLite database:\n{done.stderr[-3000:]}")
    path = var_dir / "db.sqlite3"
    # The writer has exited: its WAL is checkpointed into the file, which
    # is whole on its own.
    if (var_dir / "db.sqlite3-wal").exists():
        raise RuntimeError(f"{path} still has a write-ahead log; it cannot be copied alone.")
    return Database(path=path, token=done.stdout.split()[-1])


class Stack:
    """One `manage.py up`, in a var directory of its own; a context manager
    that stops it with Ctrl-C (SIGINT), twice, as an impatient person
    would."""

    def __init__(
        self, *, settings_module: str, broker_url: str | None, var_dir: Path, log_path: Path, database: Database
    ):
        self.var_dir = var_dir
        self.port = free_port()
        self.env = stack_env(settings_module=settings_module, var_dir=var_dir)
        self.env.update(
            FLOWER_BASIC_AUTH=f"bench:{secrets.token_hex(8)}",
            EMAIL_PORT=str(free_port()),
        )
        if broker_url:
            self.env["CELERY_BROKER_URL"] = broker_url
        self.log_path = log_path
        self.lines: list[str] = []
        self.database = database
        self.token = database.token  # the API's, for the bench's user

    def __enter__(self) -> "Stack":
        # A copy of the run's migrated database, its owner's only as `up`
        # (umask 077) makes it: `up` migrates it as it would any (nothing
        # to do) and finds the bench's user there.
        copy = self.var_dir / "db.sqlite3"
        shutil.copyfile(self.database.path, copy)
        copy.chmod(0o600)
        command = [sys.executable, "manage.py", "up", "--noreload", "--port", str(self.port)]
        command += ["--flower-port", str(free_port())]
        self.process = subprocess.Popen(
            command, cwd=harness.REPO, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        for pattern in (r"^Ready: ", r"^worker:general\s*\|.* ready\.$", r"^worker:heavy\s*\|.* ready\.$"):
            harness.wait_until(lambda p=pattern: self._seen(p), timeout=120, what=f"`up` to print {pattern!r}")
        return self

    def _read(self) -> None:
        with open(self.log_path, "w") as log:
            for line in self.process.stdout:
                self.lines.append(line)
                log.write(line)

    def _seen(self, pattern: str) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"`up` exited with {self.process.returncode}; see {self.log_path}")
        return any(re.search(pattern, line) for line in list(self.lines))

    def post(self, path: str, body: dict) -> dict:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            data=json.dumps(body).encode(),
            headers={"Authorization": f"Token {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.load(response)

    def query(self, sql: str, params=()) -> list[tuple]:
        with sqlite3.connect(self.var_dir / "db.sqlite3", timeout=30) as db:
            return db.execute(sql, params).fetchall()

    def succeeded(self) -> int:
        failed = self.query(
            "SELECT count(*) FROM jobs_job WHERE status NOT IN ('SUCCESS', 'PENDING', 'QUEUED', 'STARTED')"
        )
        if failed[0][0]:
            raise RuntimeError(f"{failed[0][0]} jobs did not succeed; see {self.log_path}")
        return self.query("SELECT count(*) FROM jobs_job WHERE status = 'SUCCESS'")[0][0]

    def __exit__(self, *exc_info) -> None:
        # Ctrl-C, and once `up` says it is stopping, Ctrl-C again: it kills
        # what it started instead of waiting for each program's warm
        # shutdown (five seconds a stack), which measures nothing here.
        self.process.send_signal(signal.SIGINT)
        try:
            harness.wait_until(lambda: self._seen(r"^Stopping "), timeout=30, what="`up` to stop", interval=0.05)
            self.process.send_signal(signal.SIGINT)
        except (RuntimeError, TimeoutError):
            pass  # it exited already, or it stops at its own pace

    def wait_stopped(self) -> None:
        """Until `up` has exited (after __exit__)."""
        try:
            self.process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.reader.join(5)


def wait_for_successes(stack: Stack, count: int) -> None:
    deadline = time.monotonic() + TIMEOUT_SECONDS
    while stack.succeeded() < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{count} jobs not done within {TIMEOUT_SECONDS} s; see {stack.log_path}")
        time.sleep(0.02)


def drain_seconds(stack: Stack, jobs: int) -> float:
    before = stack.succeeded()
    sent = time.monotonic()
    stack.post("/api/jobs/bulk/", {"task": "jobs.noop", "calls": [{}] * jobs})
    wait_for_successes(stack, before + jobs)
    return time.monotonic() - sent


def started_at(stack: Stack, job_id: str) -> float | None:
    rows = stack.query("SELECT started_at FROM jobs_job WHERE id = ?", [job_id.replace("-", "")])
    if not rows or rows[0][0] is None:
        return None
    # Django keeps UTC without an offset in SQLite.
    return datetime.fromisoformat(rows[0][0]).replace(tzinfo=UTC).timestamp()


def latencies_ms(stack: Stack, jobs: int) -> list[float]:
    """POST sent -> STARTED of `jobs` jobs, one at a time."""
    figures = []
    for _ in range(jobs):
        time.sleep(IDLE_SECONDS)
        sent = time.time()
        job_id = stack.post("/api/jobs/", {"task": "jobs.noop"})["id"]
        deadline = time.monotonic() + TIMEOUT_SECONDS
        while (started := started_at(stack, job_id)) is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} did not start; see {stack.log_path}")
            time.sleep(0.002)
        figures.append((started - sent) * 1000)
    return figures


def rabbitmq_version() -> str:
    from kombu import Connection

    with Connection(BROKER_URL) as conn:
        conn.connect()
        return conn.connection.server_properties.get("version", "?")


def run(*, quick: bool, jobs: int | None = None, rounds: int | None = None) -> dict:
    preset = QUICK if quick else FULL
    jobs = jobs or preset["jobs"]
    rounds = rounds or preset["rounds"]
    counts = {name: round(jobs * SLOW_SHARE) if name in SLOW else jobs for name in VARIANTS}
    latency_counts = {
        name: max(3, round(preset["latency_jobs"] * SLOW_SHARE * 3)) if name in SLOW else preset["latency_jobs"]
        for name in VARIANTS
    }
    started = harness.now_stamp()
    scratch = harness.run_dir(started)
    harness.reset_vhost(BROKER_URL)
    machine = harness.describe_machine(rabbitmq_version=rabbitmq_version(), postgresql_version="not used (SQLite)")
    harness.print_machine(machine)
    print(
        f"`manage.py up` per variant and round (2 workers x 2 prefork children, beat, Flower, SQLite); "
        f"drain of {harness.describe_counts(counts)} jobs.noop from one POST /api/jobs/bulk/, then "
        f"POST -> STARTED of {harness.describe_counts(latency_counts)} jobs one at a time, "
        f"{IDLE_SECONDS * 1000:.0f} ms apart; {rounds} round(s)\n",
        flush=True,
    )
    latencies: dict[str, list[float]] = {name: [] for name in VARIANTS}
    template_dir = Path(tempfile.mkdtemp(prefix="bench-embedded-template-"))
    database = migrated_database(template_dir)
    # Stacks told to stop and not yet gone, with their var directories.
    stopping: list[tuple[Stack, Path]] = []

    def wait_stopped() -> None:
        while stopping:
            stack, var_dir = stopping.pop()
            stack.wait_stopped()
            shutil.rmtree(var_dir, ignore_errors=True)

    def measure(name: str, round_number: int) -> float:
        variant = VARIANTS[name]
        var_dir = Path(tempfile.mkdtemp(prefix=f"bench-embedded-{name}-"))
        if variant["broker"]:
            harness.reset_vhost(variant["broker"])
        stack = Stack(
            settings_module=variant["settings"],
            broker_url=variant["broker"],
            var_dir=var_dir,
            log_path=scratch / f"up-{name}-{round_number}.log",
            database=database,
        )
        started = False
        try:
            with stack:
                # The previous stack, killed, is gone before anything is
                # measured; it went while this one started. After its
                # second Ctrl-C `up` takes about two seconds to exit here,
                # waiting for its killed workers' pool children, which
                # this machine's init reaps late: idle time, that a stack
                # waited out in turn cost `make bench` about 4 s.
                wait_stopped()
                stopping.append((stack, var_dir))  # once told to stop, on the way out
                started = True
                latencies_ms(stack, WARMUP_JOBS_SLOW if name in SLOW else WARMUP_JOBS)  # imports, connections
                seconds = drain_seconds(stack, counts[name])
                latencies[name] += latencies_ms(stack, latency_counts[name])
                return seconds
        finally:
            if not started:
                shutil.rmtree(var_dir, ignore_errors=True)

    try:
        rates, measurements = harness.rate_rounds(
            list(VARIANTS), rounds=rounds, count=counts, unit="jobs", measure=measure
        )
    finally:
        wait_stopped()
        shutil.rmtree(template_dir, ignore_errors=True)
    summary = {name: harness.spread(values) for name, values in rates.items()}
    latency = {name: harness.percentiles(values) for name, values in latencies.items()}
    print()
    harness.print_table([(name, summary[name]) for name in VARIANTS], "jobs/s")
    print(f"\n{'POST -> STARTED, ms':<28} {'p50':>7}  {'p99':>7}  {'max':>7}")
    for name, figures in latency.items():
        print(f"{name:<28} {figures['p50']:7.1f}  {figures['p99']:7.1f}  {figures['max']:7.1f}")
    ratios = harness.kit_ratios(rates, summary, others=("rabbitmq", "kombu-filesystem"), kit="embedded")
    print("\nDrain rate of the embedded default over:")
    harness.print_ratios(ratios, width=28)
    return {
        "benchmark": "embedded",
        "started_at": started,
        "machine": machine,
        "parameters": {
            "jobs": counts,
            "latency_jobs": latency_counts,
            "rounds": rounds,
            "idle_seconds": IDLE_SECONDS,
            "stack": "manage.py up --noreload: web (runserver), worker general and heavy (2 prefork each), "
            "beat, Flower, SMTP sink; SQLite",
        },
        "variants": {
            name: f"{variant['settings']}, broker {variant['broker'] or 'filesystem'}"
            for name, variant in VARIANTS.items()
        },
        "measurements": measurements,
        "latencies_ms": latencies,
        "summary_jobs_per_second": summary,
        "summary_post_to_started_ms": latency,
        "ratios_drain": ratios,
    }


def main() -> None:
    parser = harness.rounds_parser(
        prog="python -m bench.embedded",
        description="The embedded default (make run) beside the same stack on RabbitMQ (not a test).",
        quick=QUICK,
        full=FULL,
    )
    args = parser.parse_args()
    harness.report(run(quick=args.quick, jobs=args.jobs, rounds=args.rounds))


if __name__ == "__main__":
    main()
