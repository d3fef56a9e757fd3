"""Pieces every benchmark shares: the bench vhost and database, worker
processes, a description of the machine, and reporting (table and JSON)."""

import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path
from urllib.parse import unquote, urlparse

import psycopg

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"


def reset_vhost(broker_url: str) -> None:
    """Delete and recreate the broker URL's vhost: no message or queue
    (with arguments from an older run) survives into this one."""
    vhost = unquote(urlparse(broker_url).path.lstrip("/"))
    if vhost in ("", "/"):
        raise SystemExit(f"Refusing to reset RabbitMQ's default vhost ({broker_url}); give the bench its own.")
    rabbitmqctl = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    subprocess.run([rabbitmqctl, "-q", "delete_vhost", vhost], capture_output=True)
    for command in (["add_vhost", vhost], ["set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"]):
        subprocess.run([rabbitmqctl, "-q", *command], check=True, capture_output=True)


def ensure_database(db: dict) -> None:
    """Create the PostgreSQL database named in Django's settings if missing."""
    params = {"host": db["HOST"] or "127.0.0.1", "port": db["PORT"] or 5432, "user": db["USER"], "password": db["PASSWORD"]}
    with psycopg.connect(dbname="postgres", autocommit=True, **params) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [db["NAME"]]).fetchone():
            conn.execute(f'CREATE DATABASE "{db["NAME"]}"')


def wait_until(condition: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"Timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


class Worker:
    """A real `celery worker` process under a given settings module; a context
    manager that stops it (warm shutdown) on exit."""

    def __init__(
        self, *, name: str, settings_module: str, queue: str, concurrency: int, log_path: Path, env: dict | None = None
    ):
        self.command = [
            sys.executable, "-m", "celery", "-A", "config", "worker",
            "-P", "prefork", "-c", str(concurrency), "-Q", queue, "-n", f"bench-{name}@%h",
            # No chatter between workers, and no per-task INFO lines: logging
            # would cost every variant the same and blur the difference.
            "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "WARNING",
        ]  # fmt: skip
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

    def __exit__(self, *exc_info) -> None:
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
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
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


def run_dir(started_at: str) -> Path:
    """Worker logs and scratch files of one run, next to its JSON."""
    path = RESULTS_DIR / started_at.replace(":", "")
    path.mkdir(parents=True, exist_ok=True)
    return path


def now_stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


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


def kit_ratios(rates: dict[str, list[float]], summary: dict[str, dict], others: tuple[str, ...]) -> dict:
    """The kit's rate over each other variant's: of the medians, and the
    spread of the per-round ratios (the variants of a round ran back to
    back, so a per-round ratio cancels the machine's slow patches)."""
    ratios = {}
    for other in others:
        per_round = [kit / rate for kit, rate in zip(rates["kit"], rates[other], strict=True)]
        ratios[f"kit/{other}"] = {
            "of_medians": summary["kit"]["median"] / summary[other]["median"],
            "per_round": spread(per_round),
        }
    return ratios


def print_ratios(ratios: dict, *, width: int = 12) -> None:
    for name, ratio in ratios.items():
        r = ratio["per_round"]
        print(f"{name:<{width}} {ratio['of_medians']:5.2f}  (per round {r['min']:.2f} - {r['max']:.2f})")
