"""The embedded default end to end, as a first run does it: `manage.py up`
with no DATABASE_URL and no CELERY_BROKER_URL (SQLite and the filesystem
broker in a fresh var directory) migrates, creates an admin, runs a job
posted to the API, serves Flower behind its login, and stops cleanly on
Ctrl-C, leaving no process behind."""

import base64
import json
import os
import re
import signal
import smtplib
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from jobs.queues import WORKER_GROUPS
from tests.helpers import REPO, free_port, wait_for

pytestmark = pytest.mark.integration

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

    def __init__(self, env: dict, port: int, flower_port: int):
        self.env = env
        self.port = port
        self.flower_port = flower_port
        self.lines: list[str] = []

    def start(self) -> "Up":
        command = [sys.executable, "manage.py", "up", "--port", str(self.port), "--flower-port", str(self.flower_port)]
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


def manage_shell(env: dict, code: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
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


@pytest.fixture
def first_run(tmp_path):
    """A var directory that has never seen the kit, and the environment of a
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


def test_up_runs_a_job_on_sqlite_and_the_filesystem_broker_and_stops_cleanly(first_run):
    var_dir, env = first_run
    up = Up(env, port=free_port(), flower_port=free_port()).start()
    web = f"http://127.0.0.1:{up.port}"
    flower = f"http://127.0.0.1:{up.flower_port}"
    try:
        password = up.wait_for_line(r"user 'admin', password '([^']+)' \(shown only this once\)").group(1)
        up.wait_for_line(rf"^Ready: {re.escape(web)}/admin/$")
        for group in WORKER_GROUPS:
            up.wait_for_line(rf"^worker:{group}\s*\|.* {group}@\S+ ready\.$")

        # The printed password is the admin's: it gets a token for the API.
        token = manage_shell(
            env,
            "from django.contrib.auth import authenticate; from rest_framework.authtoken.models import Token; "
            f"print(Token.objects.create(user=authenticate(username='admin', password={password!r})).key)",
        )
        status, job = http(f"{web}/api/jobs/", token=token, body={"task": "jobs.sleep", "args": [0.2, 2]})
        assert status == 202, job

        def finished():
            _, body = http(job["url"], token=token)
            return body if body["status"] in {"SUCCESS", "FAILURE", "DEAD", "LOST", "REVOKED"} else None

        done = wait_for(finished, timeout=30, interval=0.3, what="the job to finish")
        assert done["status"] == "SUCCESS", done
        assert done["result"] == {"slept": 0.2}
        assert done["progress"]["percent"] == 100
        assert (var_dir / "db.sqlite3").is_file()
        assert (var_dir / "broker" / "queue").is_dir()

        # The SMTP sink takes mail where EMAIL_HOST/EMAIL_PORT point.
        up.wait_for_line(rf"^  Mail sink {re.escape(web)}/mail/sink/  \(SMTP on 127\.0\.0\.1:{env['EMAIL_PORT']}\)$")
        with smtplib.SMTP("127.0.0.1", int(env["EMAIL_PORT"]), timeout=10) as smtp:
            assert smtp.noop()[0] == 250

        assert http(f"{flower}/", login=None)[0] == 401
        assert http(f"{flower}/", login=("flower", "wrong"))[0] == 401
        assert http(f"{flower}/", login=FLOWER_LOGIN)[0] == 200

        # Flower reaches the workers through the broker (remote control).
        def workers_in_flower():
            status, workers = http(f"{flower}/api/workers?refresh=1", login=FLOWER_LOGIN)
            return status == 200 and len(workers) == len(WORKER_GROUPS) and workers

        workers = wait_for(workers_in_flower, timeout=20, interval=1, what="Flower to list both workers")
        assert sorted(name.split("@")[0] for name in workers) == sorted(WORKER_GROUPS)
    finally:
        up.process.send_signal(signal.SIGINT)  # Ctrl-C
        try:
            up.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            up.process.kill()
        up.reader.join(5)

    assert up.process.returncode == 0, up.output
    assert up.lines[-1] == "Stopped.", up.output
    assert ": killed." not in up.output
    assert processes_with(f"KIT_VAR_DIR={var_dir}".encode()) == []
