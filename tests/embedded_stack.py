"""A first run of the kit as a test drives it: `manage.py up` (or single
programs) with no DATABASE_URL and no CELERY_BROKER_URL, on SQLite and the
filesystem broker in a fresh var directory, and every process it started
killed when the test ends."""

import base64
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

from tests.helpers import REPO, free_port, wait_for

FLOWER_LOGIN = ("flower", "e2e-flower-secret")
# Workers on the filesystem broker take several seconds for a warm shutdown;
# `up` itself kills what is still running after 45 (GRACE_SECONDS).
STOP_TIMEOUT = 60
# Set for this test run by config.settings.test, or by whoever runs the tests:
# none of them may reach a first run of the kit.
NOT_INHERITED = (
    "DATABASE_URL",
    "CELERY_BROKER_URL",
    "CELERY_WORKER_SEND_TASK_EVENTS",
    "DJANGO_SECRET_KEY",
    "DJANGO_ALLOWED_HOSTS",
    "DJANGO_DEBUG",
    "DJANGO_SUPERUSER_USERNAME",
    "DJANGO_SUPERUSER_PASSWORD",
    "FLOWER_BASIC_AUTH",
    "RUN_MAIN",
    "LOG_LEVEL",
    "EMAIL_HOST",
    "EMAIL_PORT",
)


def processes_with(marker: bytes) -> list[int]:
    """Every process whose environment holds `marker`: whatever `up` started,
    in whichever process group it ended up."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                pids.append(int(entry.name))
        except OSError:  # gone meanwhile, or not ours
            continue
    return pids


class Up:
    """`manage.py up` as a person runs it, its output collected line by line."""

    def __init__(self, env: dict, port: int, flower_port: int, extra_args: tuple[str, ...] = ()):
        self.env = env
        self.port = port
        self.flower_port = flower_port
        self.extra_args = extra_args
        self.lines: list[str] = []

    @property
    def web(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "Up":
        command = [sys.executable, "manage.py", "up", "--port", str(self.port), "--flower-port", str(self.flower_port)]
        command += self.extra_args
        self.process = subprocess.Popen(
            command, cwd=REPO, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        return self

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for_line(self, pattern: str, timeout: float = 60) -> re.Match:
        def found():
            if self.process.poll() is not None:
                raise AssertionError(f"`up` exited with {self.process.returncode}:\n{self.output}")
            return next((m for line in list(self.lines) if (m := re.search(pattern, line))), None)

        try:
            return wait_for(found, timeout=timeout, interval=0.2, what=f"a line matching {pattern!r}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- output of up ---\n{self.output}") from None

    def stop(self) -> int:
        """Ctrl-C, as a person stops it; its exit code."""
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.reader.join(5)
        return self.process.returncode


def admin_token(env: dict, username: str = "admin") -> str:
    """An API token for the admin `up` created."""
    return manage_shell(
        env,
        "from django.contrib.auth.models import User; from rest_framework.authtoken.models import Token; "
        f"print(Token.objects.get_or_create(user=User.objects.get(username={username!r}))[0].key)",
    )


def jobs_rows(var_dir: Path, sql: str, params=()) -> list[tuple]:
    """Rows of a query on the embedded default's SQLite database, read as
    any other process reads it (WAL: beside the writers)."""
    with sqlite3.connect(var_dir / "db.sqlite3", timeout=30) as db:
        return db.execute(sql, params).fetchall()


def sqlite_id(job_id: str) -> str:
    """How Django stores a UUID primary key in SQLite: 32 hex digits."""
    return job_id.replace("-", "")


def manage_shell(env: dict, code: str, *, timeout: float = 60) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def http(url: str, *, token: str | None = None, login: tuple[str, str] | None = None, body: dict | None = None):
    """(status, parsed JSON or text) of one request; errors are answers too."""
    request = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode())
    if body is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Token {token}")
    if login:
        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(login).encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def first_run_env(tmp_path: Path):
    """For a test module's fixture (`yield from first_run_env(tmp_path)`):
    a var directory that has never seen the kit, and the environment of a
    person who has set nothing but Flower's login."""
    var_dir = tmp_path / "var"
    env = {name: value for name, value in os.environ.items() if name not in NOT_INHERITED}
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings.local",
        KIT_VAR_DIR=str(var_dir),
        FLOWER_BASIC_AUTH=":".join(FLOWER_LOGIN),
        # The local SMTP sink `up` starts, on a port no other run holds.
        EMAIL_PORT=str(free_port()),
        PYTHONUNBUFFERED="1",
    )
    marker = f"KIT_VAR_DIR={var_dir}".encode()
    yield var_dir, env
    # Whatever the test's outcome, nothing it started outlives it.
    for pid in processes_with(marker):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
