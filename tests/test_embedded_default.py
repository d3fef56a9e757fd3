"""The embedded default end to end, as a first run does it: `manage.py up`
with no DATABASE_URL and no CELERY_BROKER_URL (SQLite and the filesystem
broker in a fresh var directory) migrates, creates an admin, runs a job
posted to the API, serves Flower behind its login, and stops cleanly on
Ctrl-C, leaving no process behind."""

import re
import signal
import smtplib
import subprocess
import time

import pytest

from jobs.queues import WORKER_GROUPS
from tests.embedded_stack import (
    FLOWER_LOGIN,
    STOP_TIMEOUT,
    Up,
    admin_token,
    first_run_env,
    http,
    manage_shell,
    processes_with,
)
from tests.helpers import free_port, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def first_run(tmp_path):
    yield from first_run_env(tmp_path)


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
        # Its Broker tab, which reads RabbitMQ's management API, says why it
        # has nothing to show instead of a bare 404.
        status, page = http(f"{flower}/broker", login=FLOWER_LOGIN)
        assert status == 200 and "Broker: not available on the embedded broker." in page, page

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


def test_up_says_one_line_per_program_then_nothing_while_idle_and_bad_input_in_one_line(first_run):
    var_dir, env = first_run
    up = Up(env, port=free_port(), flower_port=free_port()).start()
    try:
        up.wait_for_line(rf"^Ready: {re.escape(up.web)}/admin/$")
        up.wait_for_line(r"^flower\s*\| .*Visit me at ")
        programs = ("web", "worker:general", "worker:heavy", "beat", "flower", "smtp-sink")
        for program in programs:
            up.wait_for_line(rf"^{program}\s*\|")
        # Through a whole outbox relay period (10 s) and then some.
        idle_from = len(up.lines)
        time.sleep(13)
        said = [line.split("|")[0].strip() for line in up.lines if "|" in line]
        assert sorted(said) == sorted(programs), up.output
        assert up.lines[idle_from:] == [], up.output
        assert "No hostname was supplied" not in up.output

        token = admin_token(env)
        # The API refuses this with a 400; from code it reaches the worker,
        # which fails it before running (the task's argument_check).
        job_id = manage_shell(env, "from jobs.tasks import sleep; print(sleep.delay(-1).id)", timeout=120)
        failed = wait_for(
            lambda: (body := http(f"{up.web}/api/jobs/{job_id}/", token=token)[1])["status"] == "FAILURE" and body,
            timeout=30,
            what="the job to fail",
        )
        assert failed["error"] == "BadInput: seconds must be a number from 0 to 30, not -1", failed
        failure = up.wait_for_line(rf"^worker:general\s*\| .* WARNING .*{job_id}.* raised expected: BadInput")
        assert failure.string.endswith("BadInput('seconds must be a number from 0 to 30, not -1')")
        assert "Traceback" not in up.output
    finally:
        assert up.stop() == 0, up.output
