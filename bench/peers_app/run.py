"""One measurement of one peer, run in the peers' virtualenv by bench/peers.py:

    .venv-peers/bin/python -m bench.peers_app.run SYSTEM --jobs N --log-dir DIR
    .venv-peers/bin/python -m bench.peers_app.run prepare

prints one JSON object: the seconds from the first job's start to the last
job's end as the peer's own store recorded them, the CPU milliseconds per
job of each part of the stack, the number of jobs its store counted as done,
and every setting the run used.

Method, the same as the kit's in bench/throughput.py: empty the peer's store;
enqueue N jobs with no worker running; start 2 worker processes and let them
come up idle while the jobs are held back; read the CPU (bench/cpu.py);
release the jobs; wait until the peer's own store counts N done; read the
CPU again; kill the workers. Held back, the jobs are already written:
- Procrastinate, django-tasks, django-q2: enqueued inside one database
  transaction that commits once the workers are idle (uncommitted rows are
  invisible to them);
- RQ: its queue's list renamed aside, and back once the workers are idle
  (a rename wakes the workers' blocking pop like a push would);
- Dramatiq: each worker process waits at a gate file before it consumes
  (bench/peers_app/dramatiq_actors.py).
Start-up (imports, connecting, forking) thus stays out of the CPU figures,
as the kit's parked worker keeps it out of its own.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.peers_app.settings")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.db import connection, transaction  # noqa: E402

from bench import cpu, harness  # noqa: E402

WORKER_PROCESSES = 2
REDIS_URL = os.environ.get("BENCH_PEERS_REDIS_URL", "redis://127.0.0.1:6379/14")
AMQP_URL = os.environ.get("BENCH_PEERS_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/kit-bench-peers")


def _sql(query: str, params: tuple = ()) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(query, params)
        return cursor.fetchall() if cursor.description else []


def _window(row: tuple) -> float:
    start, end = row
    if start is None or end is None:
        raise RuntimeError("No start or end time recorded; see the worker logs.")
    return (end - start).total_seconds()


class _InTransaction:
    """A peer whose jobs are rows: enqueued in one transaction, held open
    until release()."""

    def hold(self, jobs: int) -> None:
        self._atomic = transaction.atomic()
        self._atomic.__enter__()
        try:
            self.enqueue(jobs)
        except BaseException:
            self._atomic.__exit__(*sys.exc_info())
            raise

    def release(self) -> None:
        self._atomic.__exit__(None, None, None)

    def abandon(self) -> None:
        self._atomic.__exit__(RuntimeError, RuntimeError("abandoned"), None)


class Procrastinate(_InTransaction):
    name = "procrastinate"
    servers = ("postgresql",)
    stores = "a row per job in procrastinate_jobs, and a row per status change in procrastinate_events"

    def settings(self) -> dict:
        return {
            "connector": "procrastinate.contrib.django (Django's connection to defer; the worker's own psycopg pool)",
            "worker": "manage.py procrastinate worker, its defaults: concurrency 1, LISTEN/NOTIFY, jobs kept",
            "conn_max_age": "does not apply: the worker uses its own connection pool, not Django's connections",
        }

    def reset(self) -> None:
        _sql(
            "TRUNCATE procrastinate_events, procrastinate_periodic_defers, procrastinate_jobs RESTART IDENTITY CASCADE"
        )

    def enqueue(self, jobs: int) -> None:
        from bench.peers_app.tasks import procrastinate_noop

        procrastinate_noop.batch_defer(*({} for _ in range(jobs)))

    def worker_commands(self) -> list[list[str]]:
        return [[sys.executable, "-m", "django", "procrastinate", "worker"] for _ in range(WORKER_PROCESSES)]

    def done(self) -> int:
        return _sql("SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'")[0][0]

    def seconds(self) -> float:
        return _window(
            _sql(
                "SELECT min(at) FILTER (WHERE type = 'started'), max(at) FILTER (WHERE type = 'succeeded') "
                "FROM procrastinate_events"
            )[0]
        )


class DjangoTasks(_InTransaction):
    name = "django-tasks"
    servers = ("postgresql",)
    stores = "a row per task (DBTaskResult: claimed, then its result)"

    def settings(self) -> dict:
        return {
            "backend": "django_tasks_db.DatabaseBackend",
            "worker": "manage.py db_worker, its defaults: interval 1 s, one task at a time",
        }

    def reset(self) -> None:
        from django_tasks_db.models import DBTaskResult

        _sql(f"TRUNCATE {DBTaskResult._meta.db_table}")

    def enqueue(self, jobs: int) -> None:
        from bench.peers_app.tasks import django_tasks_noop

        for _ in range(jobs):
            django_tasks_noop.enqueue()

    def worker_commands(self) -> list[list[str]]:
        return [[sys.executable, "-m", "django", "db_worker"] for _ in range(WORKER_PROCESSES)]

    def done(self) -> int:
        from django_tasks_db.models import DBTaskResult

        return DBTaskResult.objects.successful().count()

    def seconds(self) -> float:
        from django.db.models import Max, Min
        from django_tasks_db.models import DBTaskResult

        window = DBTaskResult.objects.aggregate(start=Min("started_at"), end=Max("finished_at"))
        return _window((window["start"], window["end"]))


class DjangoQ2(_InTransaction):
    name = "django-q2"
    servers = ("postgresql",)
    stores = "a queue row per task (OrmQ, deleted when done) and a result row (Task)"

    def settings(self) -> dict:
        return {"Q_CLUSTER": settings.Q_CLUSTER, "worker": "manage.py qcluster: one cluster of 2 worker processes"}

    def reset(self) -> None:
        from django_q.models import OrmQ, Task

        _sql(f"TRUNCATE {OrmQ._meta.db_table}, {Task._meta.db_table}")
        self.first_starts.write_text("")

    def enqueue(self, jobs: int) -> None:
        from django_q.tasks import async_task

        for _ in range(jobs):
            async_task("bench.peers_app.noop.noop")

    def worker_commands(self) -> list[list[str]]:
        # One cluster: a sentinel forks the 2 workers, a pusher and a monitor.
        return [[sys.executable, "-m", "django", "qcluster"]]

    # Each worker process's first start (bench/peers_app/apps.py): django-q2's
    # own Task.started is the enqueue time.
    first_starts = Path(tempfile.gettempdir()) / f"bench-peers-django-q2-starts-{os.getpid()}.txt"

    def worker_env(self) -> dict:
        return {"BENCH_PEERS_FIRST_STARTS": str(self.first_starts)}

    def done(self) -> int:
        from django_q.models import Success

        return Success.objects.count()

    def seconds(self) -> float:
        from django.db.models import Max
        from django_q.models import Task

        end = Task.objects.aggregate(end=Max("stopped"))["end"]
        starts = [float(line) for line in self.first_starts.read_text().split()]
        if end is None or not starts:
            raise RuntimeError("No start or end time recorded; see the worker logs.")
        return end.timestamp() - min(starts)


class RQ:
    name = "rq"
    servers = ("redis",)
    stores = "a Redis hash per job and the finished-job registry (in memory, not on disk)"
    queue_name = "bench-rq"

    def __init__(self) -> None:
        from redis import Redis
        from rq import Queue

        self.redis = Redis.from_url(REDIS_URL)
        self.queue = Queue(self.queue_name, connection=self.redis)
        self.ids: list[str] = []

    def settings(self) -> dict:
        return {
            "redis": REDIS_URL,
            "worker": "rq worker, 2 processes, its defaults: a fork per job (rq.Worker), results kept 500 s",
        }

    def reset(self) -> None:
        # Only RQ's keys, in a Redis database of the benchmark's own.
        keys = list(self.redis.scan_iter("rq:*", count=1000))
        for start in range(0, len(keys), 1000):
            self.redis.delete(*keys[start : start + 1000])

    def hold(self, jobs: int) -> None:
        from rq import Queue

        self.ids = [job.id for job in self.queue.enqueue_many([Queue.prepare_data("bench.peers_app.noop.noop")] * jobs)]
        self.redis.rename(self.queue.key, self.queue.key + ":held")

    def release(self) -> None:
        self.redis.rename(self.queue.key + ":held", self.queue.key)

    def abandon(self) -> None:
        pass

    def worker_commands(self) -> list[list[str]]:
        return [
            [sys.executable, "-m", "rq.cli", "worker", "--url", REDIS_URL, self.queue_name]
            for _ in range(WORKER_PROCESSES)
        ]

    def done(self) -> int:
        return self.queue.finished_job_registry.count

    def seconds(self) -> float:
        from rq.job import Job

        jobs = [
            job
            for start in range(0, len(self.ids), 1000)
            for job in Job.fetch_many(self.ids[start : start + 1000], connection=self.redis)
        ]
        return (max(job.ended_at for job in jobs) - min(job.started_at for job in jobs)).total_seconds()


class Dramatiq:
    name = "dramatiq"
    servers = ("rabbitmq",)
    stores = "nothing (no results middleware); the benchmark stamps each message's start and end in a file"

    def __init__(self, scratch: Path) -> None:
        self.stamps = scratch / "dramatiq-stamps.txt"
        self.gate = scratch / "dramatiq-gate"
        os.environ["BENCH_STAMP_FILE"] = str(self.stamps)
        os.environ["BENCH_GATE_FILE"] = str(self.gate)
        os.environ["BENCH_PEERS_AMQP_URL"] = AMQP_URL
        from bench.peers_app import dramatiq_actors

        self.actors = dramatiq_actors

    def settings(self) -> dict:
        return {
            "broker": f"dramatiq RabbitmqBroker on {AMQP_URL}, no results middleware",
            "worker": "dramatiq --processes 2, its defaults otherwise (8 threads a process)",
        }

    def reset(self) -> None:
        self.stamps.unlink(missing_ok=True)
        self.gate.unlink(missing_ok=True)
        # Declared on the server now (the benchmark recreated the vhost), so
        # that the purge finds it.
        self.actors.broker.declare_queue(self.actors.QUEUE, ensure=True)
        self.actors.broker.flush(self.actors.QUEUE)

    def hold(self, jobs: int) -> None:
        for _ in range(jobs):
            self.actors.noop.send()

    def release(self) -> None:
        self.gate.touch()

    def abandon(self) -> None:
        pass

    def worker_commands(self) -> list[list[str]]:
        return [
            [sys.executable, "-m", "dramatiq", "bench.peers_app.dramatiq_actors", "--processes", str(WORKER_PROCESSES)]
        ]

    def _stamps(self) -> list[tuple[float, float]]:
        if not self.stamps.exists():
            return []
        return [tuple(map(float, line.split())) for line in self.stamps.read_text().splitlines()]

    def done(self) -> int:
        return len(self._stamps())

    def seconds(self) -> float:
        stamps = self._stamps()
        return max(end for _, end in stamps) - min(start for start, _ in stamps)


SYSTEMS = {system.name: system for system in (Procrastinate, DjangoTasks, DjangoQ2, RQ, Dramatiq)}


def _wait(condition, *, timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"Timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def _busy_seconds(pids: list[int]) -> float:
    now = cpu.snapshot(*pids, servers=())
    return now["worker main"] + now["worker children"]


def wait_idle(processes: list[subprocess.Popen], *, timeout: float = 90) -> None:
    """Until the workers are up and idle: all alive, and together they spent
    under 5 ms of CPU in each of the last two quarter seconds (after at least
    half a second). Short windows find a started worker sooner than one long
    one would, and two in a row are at least as strict (a peer is started
    twenty times in a `make bench`)."""
    pids = [process.pid for process in processes]
    time.sleep(0.5)
    deadline = time.monotonic() + timeout
    before = _busy_seconds(pids)
    idle_windows = 0
    while True:
        time.sleep(0.25)
        for process in processes:
            if process.poll() is not None:
                raise RuntimeError(f"A worker exited with {process.returncode} while starting; see the logs.")
        now = _busy_seconds(pids)
        idle_windows = idle_windows + 1 if now - before < 0.005 else 0
        if idle_windows == 2:
            return
        if time.monotonic() > deadline:
            raise TimeoutError("The workers never went idle.")
        before = now


def measure(system, *, jobs: int, log_dir: Path) -> dict:
    system.reset()
    system.hold(jobs)
    env = {**os.environ, "PYTHONPATH": str(REPO), **(system.worker_env() if hasattr(system, "worker_env") else {})}
    logs = [
        open(log_dir / f"worker-{system.name}-{index}.log", "ab") for index, _ in enumerate(system.worker_commands())
    ]
    processes: list[subprocess.Popen] = []
    released = False
    try:
        for command, log in zip(system.worker_commands(), logs, strict=True):
            # Their own session each, so a worker and what it forked die together.
            processes.append(
                subprocess.Popen(
                    command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
            )
        wait_idle(processes)
        pids = [process.pid for process in processes]
        # Only the servers the peer uses: on a shared machine the others'
        # CPU is other people's work.
        servers, databases = system.servers, (settings.DATABASES["default"]["NAME"],)
        before = cpu.snapshot(*pids, servers=servers, databases=databases)
        system.release()
        released = True

        def drained() -> bool:
            for process in processes:
                if process.poll() is not None:
                    raise RuntimeError(f"A worker exited with {process.returncode}; see {log_dir}.")
            return system.done() >= jobs

        # Generous: the slowest peer runs more than 20 jobs a second.
        _wait(drained, timeout=60 + jobs / 20, what=f"{system.name} to run {jobs} jobs ({log_dir})")
        after = cpu.snapshot(*pids, servers=servers, databases=databases)
    finally:
        if not released:
            system.abandon()
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        for log in logs:
            log.close()
    if (done := system.done()) != jobs:
        raise RuntimeError(f"{system.name} counted {done} of {jobs} jobs done.")
    return {
        "system": system.name,
        "jobs": jobs,
        "seconds": system.seconds(),
        "cpu_ms_per_job": cpu.per_item_ms(before, after, jobs),
        "counted_done": done,
        "stores": system.stores,
        "settings": {
            "worker_processes": WORKER_PROCESSES,
            "conn_max_age": settings.DATABASES["default"]["CONN_MAX_AGE"],
            **system.settings(),
        },
    }


def prepare() -> None:
    """Create the peers' database if missing and migrate it."""
    import psycopg
    from django.core.management import call_command

    db = settings.DATABASES["default"]
    with psycopg.connect(host=db["HOST"], port=db["PORT"], user=db["USER"], dbname="postgres", autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [db["NAME"]]).fetchone():
            conn.execute(f'CREATE DATABASE "{db["NAME"]}"')
    call_command("migrate", verbosity=0, interactive=False)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.peers_app.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("system", choices=[*SYSTEMS, "prepare"])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--log-dir", type=Path, default=Path("."))
    args = parser.parse_args()
    if args.system == "prepare":
        prepare()
        return
    args.log_dir.mkdir(parents=True, exist_ok=True)
    system = Dramatiq(args.log_dir) if args.system == "dramatiq" else SYSTEMS[args.system]()
    print(json.dumps(measure(system, jobs=args.jobs, log_dir=args.log_dir)), flush=True)
    # The measurement is over (0.3 s of each of the twenty runs in a quick
    # `python -m bench peers`).
    harness.exit_without_collecting()


if __name__ == "__main__":
    main()
