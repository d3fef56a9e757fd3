"""The management commands: the arguments they hand to Celery, the checks
they make before starting anything, and the job maintenance they do on real
rows in PostgreSQL."""

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from datetime import timedelta
from io import StringIO

import pytest
from celery import current_app
from celery.bin.base import CLIContext
from celery.bin.celery import celery as celery_program
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings
from django.utils import timezone
from django_celery_results.models import TaskResult

from jobs.filesystem_broker import message_name
from jobs.management.commands import flower as flower_command
from jobs.management.commands import up as up_command
from jobs.management.commands._process import Children, StopSignals
from jobs.management.commands.beat import Command as BeatCommand
from jobs.management.commands.ensure_admin import AdminAccount
from jobs.management.commands.up import Command as UpCommand
from jobs.management.commands.worker import Command as WorkerCommand
from jobs.models import Job, JobStatus
from tests.helpers import REPO, free_port, wait_for


def argv_of(command_class, *args) -> list[str]:
    command = command_class()
    options = vars(command.create_parser("manage.py", "command").parse_args(args))
    return command.build_argv(options)


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


# --- worker -----------------------------------------------------------------


def test_a_worker_group_consumes_its_queues_under_its_own_name():
    argv = argv_of(WorkerCommand, "--group", "heavy")

    assert argv[0] == "worker"
    assert option(argv, "--queues") == "images,reports"
    assert option(argv, "--hostname") == "heavy@%h"


def test_a_worker_has_production_defaults():
    argv = argv_of(WorkerCommand, "--group", "general")

    assert option(argv, "--pool") == "prefork"
    assert int(option(argv, "--concurrency")) >= 1
    assert option(argv, "-O") == "fair"
    assert option(argv, "--max-tasks-per-child") == "1000"
    assert option(argv, "--max-memory-per-child") == str(512 * 1024)
    assert {"--without-gossip", "--without-mingle"} <= set(argv)


def test_a_worker_without_group_or_queues_consumes_every_queue():
    argv = argv_of(WorkerCommand)

    assert option(argv, "--queues") == "default,images,email,reports"
    assert option(argv, "--hostname") == "all@%h"


def test_a_worker_takes_explicit_queues_and_options():
    argv = argv_of(
        WorkerCommand,
        "--queues",
        "email, default,email",
        "--concurrency",
        "3",
        "--pool",
        "threads",
        "--hostname",
        "mail@box",
        "--loglevel",
        "debug",
    )

    assert option(argv, "--queues") == "email,default"
    assert option(argv, "--concurrency") == "3"
    assert option(argv, "--hostname") == "mail@box"
    assert option(argv, "--loglevel") == "DEBUG"
    # Per-child limits belong to the prefork pool.
    assert "--max-tasks-per-child" not in argv


def test_an_unknown_worker_group_is_refused_with_the_valid_names():
    with pytest.raises(CommandError, match=r"Unknown worker group 'huge'. Valid groups: general, heavy\."):
        argv_of(WorkerCommand, "--group", "huge")


def test_an_unknown_queue_is_refused_with_the_valid_names():
    with pytest.raises(CommandError, match=r"Unknown queue video\. Valid queues: default, images, email, reports\."):
        argv_of(WorkerCommand, "--queues", "images,video")


def test_a_group_and_queues_cannot_be_combined():
    with pytest.raises(CommandError, match="not allowed with argument"):
        argv_of(WorkerCommand, "--group", "heavy", "--queues", "images")


@pytest.mark.parametrize("enabled", [True, False])
def test_a_worker_sends_task_events_as_the_settings_say(enabled):
    with override_settings(CELERY_WORKER_SEND_TASK_EVENTS=enabled):
        argv = argv_of(WorkerCommand, "--group", "general")

    assert ("--task-events" in argv) is enabled


@pytest.mark.parametrize("debug", [True, False])
def test_a_worker_reloads_on_code_changes_by_default_only_in_debug(debug):
    command = WorkerCommand()
    with override_settings(DEBUG=debug):
        assert command.autoreload_enabled({"autoreload": None}) is debug
        assert command.autoreload_enabled({"autoreload": False}) is False


def test_celery_accepts_the_worker_and_beat_arguments():
    # make_context parses without running: an option Celery does not know,
    # or a bad value, raises here.
    cli = CLIContext(app=current_app, no_color=True, workdir=None)

    def parsed(argv: list[str]) -> dict:
        return celery_program.commands[argv[0]].make_context(argv[0], argv[1:], obj=cli).params

    worker = parsed(argv_of(WorkerCommand, "--group", "general"))
    assert worker["queues"] == ["default", "email"]
    assert (worker["optimization"], worker["max_tasks_per_child"], worker["without_mingle"]) == ("fair", 1000, True)
    beat = parsed(argv_of(BeatCommand))
    assert beat["scheduler"] == "django_celery_beat.schedulers:DatabaseScheduler"


# --- beat -------------------------------------------------------------------


def test_beat_uses_the_database_scheduler_and_keeps_its_state_under_var(settings):
    argv = argv_of(BeatCommand)

    assert option(argv, "--scheduler") == "django_celery_beat.schedulers:DatabaseScheduler"
    assert option(argv, "--pidfile") == str(settings.VAR_DIR / "celerybeat.pid")
    assert option(argv, "--schedule") == str(settings.VAR_DIR / "celerybeat-schedule")


# --- flower -----------------------------------------------------------------


@pytest.fixture
def flower_runs(monkeypatch):
    """Flower is never really started: the arguments it would get are kept."""
    runs: list[list[str]] = []
    monkeypatch.setattr(flower_command, "celery_run", lambda argv: runs.append(argv) or 0)
    return runs


@pytest.mark.parametrize("debug", [False, True])
@pytest.mark.parametrize("address", ["127.0.0.1", "0.0.0.0", "localhost"])
def test_flower_refuses_to_start_without_a_login_in_every_mode(monkeypatch, flower_runs, debug, address):
    monkeypatch.delenv("FLOWER_BASIC_AUTH", raising=False)

    with override_settings(DEBUG=debug), pytest.raises(CommandError, match="Set FLOWER_BASIC_AUTH=user:password"):
        call_command("flower", "--address", address)
    assert flower_runs == []


def test_up_makes_a_flower_login_once_owner_only_and_reuses_it(monkeypatch, settings, tmp_path):
    monkeypatch.delenv("FLOWER_BASIC_AUTH", raising=False)
    settings.VAR_DIR = tmp_path / "var"

    first = flower_command.flower_login_ensure()
    assert first.source == "generated" and first.user == "flower" and len(first.password) >= 16
    assert os.environ["FLOWER_BASIC_AUTH"] == f"flower:{first.password}"
    assert stat.S_IMODE(first.path.stat().st_mode) == 0o600

    monkeypatch.delenv("FLOWER_BASIC_AUTH")
    again = flower_command.flower_login_ensure()
    assert (again.source, again.password) == ("file", None), "the password is shown only once"
    assert os.environ["FLOWER_BASIC_AUTH"] == f"flower:{first.password}"

    monkeypatch.setenv("FLOWER_BASIC_AUTH", "ops:own-secret")
    assert flower_command.flower_login_ensure().source == "environment"


@pytest.mark.parametrize(
    ("header", "allowed"),
    [
        ("127.0.0.1:5555", True),
        ("localhost:5555", True),
        ("[::1]:5555", True),
        ("LOCALHOST", True),
        ("flower:5555", True),  # FLOWER_ALLOWED_HOSTS
        ("attacker.example:5555", False),
        ("127.0.0.1.attacker.example", False),
        ("", False),
    ],
)
def test_flower_answers_only_to_its_own_host_names(monkeypatch, header, allowed):
    monkeypatch.setenv("FLOWER_ALLOWED_HOSTS", "flower")

    assert (flower_command.host_name(header) in flower_command.allowed_hosts("0.0.0.0")) is allowed


def test_flower_waits_longer_for_the_workers_on_the_embedded_broker(settings):
    settings.CELERY_BROKER_URL = "filesystem://"
    assert "--inspect_timeout=3000" in argv_of(flower_command.Command)
    settings.CELERY_BROKER_URL = "amqp://guest:guest@127.0.0.1:5672/kit"
    assert not any(arg.startswith("--inspect_timeout") for arg in argv_of(flower_command.Command))


@override_settings(DEBUG=False)
def test_flower_refuses_a_malformed_login(monkeypatch, flower_runs):
    monkeypatch.setenv("FLOWER_BASIC_AUTH", "just-a-user")

    with pytest.raises(CommandError, match="must be user:password"):
        call_command("flower")
    assert flower_runs == []


@override_settings(DEBUG=False)
def test_flower_with_a_login_keeps_the_password_off_its_command_line(monkeypatch, flower_runs, settings):
    monkeypatch.setenv("FLOWER_BASIC_AUTH", "ops:s3cret-pass")

    call_command("flower", "--address", "0.0.0.0", "--port", "5599")

    [argv] = flower_runs
    assert argv[:3] == ["flower", "--address=0.0.0.0", "--port=5599"]
    assert "--persistent=True" in argv
    assert f"--db={settings.VAR_DIR / 'flower.db'}" in argv
    assert not any("s3cret" in arg for arg in argv)


# --- requeue_jobs -----------------------------------------------------------


def make_job(
    status: JobStatus, *, task_name: str = "jobs.noop", finished_days_ago: float | None = None, **fields
) -> Job:
    finished_at = None if finished_days_ago is None else timezone.now() - timedelta(days=finished_days_ago)
    return Job.objects.create(task_name=task_name, queue="default", status=status, finished_at=finished_at, **fields)


def run(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def retries_of(job: Job) -> list[Job]:
    return list(Job.objects.filter(retry_of=job))


def test_requeue_retries_failed_and_dead_jobs_once_with_their_arguments(db):
    failed = make_job(JobStatus.FAILURE, task_name="jobs.sleep", args=[0.1, 1], kwargs={})
    dead = make_job(JobStatus.DEAD)
    cancelled = make_job(JobStatus.REVOKED)
    succeeded = make_job(JobStatus.SUCCESS)

    output = run("requeue_jobs")

    assert "Retried 2 FAILURE/DEAD jobs." in output
    [retry] = retries_of(failed)
    assert (retry.task_name, retry.args, retry.status) == ("jobs.sleep", [0.1, 1], JobStatus.PENDING)
    assert len(retries_of(dead)) == 1
    assert retries_of(cancelled) == retries_of(succeeded) == []

    # A second run finds nothing new: retried jobs are skipped.
    assert "Retried 0 FAILURE/DEAD jobs." in run("requeue_jobs")
    assert len(retries_of(failed)) == 1


def test_requeue_can_select_by_status_and_task(db):
    cancelled_sleep = make_job(JobStatus.REVOKED, task_name="jobs.sleep")
    cancelled_noop = make_job(JobStatus.REVOKED)
    failed_sleep = make_job(JobStatus.FAILURE, task_name="jobs.sleep")

    output = run("requeue_jobs", "--status", "revoked", "--task", "jobs.sleep")

    assert "Retried 1 REVOKED jobs of jobs.sleep." in output
    assert len(retries_of(cancelled_sleep)) == 1
    assert retries_of(cancelled_noop) == retries_of(failed_sleep) == []


def test_requeue_dry_run_counts_without_retrying(db):
    make_job(JobStatus.FAILURE)
    make_job(JobStatus.LOST)

    output = run("requeue_jobs", "--dry-run", "--status", "FAILURE", "--status", "LOST")

    assert "Would retry 2 FAILURE/LOST jobs." in output
    assert Job.objects.count() == 2


def test_requeue_refuses_unknown_tasks_and_statuses(db):
    with pytest.raises(CommandError, match="No job task named 'jobs.nope'"):
        run("requeue_jobs", "--task", "jobs.nope")
    with pytest.raises(CommandError, match="invalid choice: 'SUCCESS'"):
        run("requeue_jobs", "--status", "success")


# --- prune_jobs -------------------------------------------------------------


def result_for(job: Job, *, days_ago: float = 0) -> TaskResult:
    result = TaskResult.objects.create(task_id=str(job.id), status=job.status, task_name=job.task_name)
    # date_done is auto_now: set the past afterwards.
    TaskResult.objects.filter(pk=result.pk).update(date_done=timezone.now() - timedelta(days=days_ago))
    return result


def test_prune_deletes_old_finished_jobs_and_their_results_only(db):
    old_success = make_job(JobStatus.SUCCESS, finished_days_ago=40)
    old_failure = make_job(JobStatus.FAILURE, finished_days_ago=31)
    recent = make_job(JobStatus.SUCCESS, finished_days_ago=29)
    running = make_job(JobStatus.STARTED)
    waiting = make_job(JobStatus.QUEUED)
    Job.objects.filter(pk__in=[running.pk, waiting.pk]).update(created_at=timezone.now() - timedelta(days=90))
    result_for(old_success, days_ago=40)
    result_for(recent, days_ago=29)

    output = run("prune_jobs")

    assert "Deleted 2 jobs that finished more than 30 days ago." in output
    assert set(Job.objects.values_list("pk", flat=True)) == {recent.pk, running.pk, waiting.pk}
    assert not Job.objects.filter(pk__in=[old_success.pk, old_failure.pk]).exists()
    assert list(TaskResult.objects.values_list("task_id", flat=True)) == [str(recent.id)]


def test_prune_takes_the_retention_in_days_and_works_in_batches(db):
    finished = [make_job(JobStatus.SUCCESS, finished_days_ago=days) for days in (1, 2, 3)]
    active = make_job(JobStatus.RETRYING)
    untracked = TaskResult.objects.create(task_id="beat-run", status="SUCCESS")
    TaskResult.objects.filter(pk=untracked.pk).update(date_done=timezone.now() - timedelta(days=5))

    output = run("prune_jobs", "--days", "0", "--batch-size", "1")

    assert f"Deleted {len(finished)} jobs that finished more than 0 days ago." in output
    assert list(Job.objects.all()) == [active]
    assert not TaskResult.objects.exists()


def test_prune_refuses_a_negative_retention():
    with pytest.raises(CommandError, match="is negative"):
        run("prune_jobs", "--days", "-1")


# --- ensure_admin -----------------------------------------------------------


@pytest.fixture
def no_superuser_env(monkeypatch):
    monkeypatch.delenv("DJANGO_SUPERUSER_USERNAME", raising=False)
    monkeypatch.delenv("DJANGO_SUPERUSER_PASSWORD", raising=False)


def test_ensure_admin_creates_admin_with_a_password_shown_only_once(db, no_superuser_env):
    first = run("ensure_admin")

    password = first.split("with password '")[1].split("'")[0]
    admin = get_user_model().objects.get(username="admin")
    assert admin.is_superuser and admin.is_staff
    assert admin.check_password(password)

    second = run("ensure_admin")
    assert "User 'admin' exists; its password is unchanged." in second
    assert password not in second


def test_ensure_admin_takes_the_credentials_from_the_environment(db, monkeypatch):
    monkeypatch.setenv("DJANGO_SUPERUSER_USERNAME", "ops")
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "a long pass phrase")

    output = run("ensure_admin")

    assert "Created superuser 'ops' with the password in DJANGO_SUPERUSER_PASSWORD." in output
    assert "a long pass phrase" not in output
    assert get_user_model().objects.get(username="ops").check_password("a long pass phrase")


def test_ensure_admin_never_resets_an_existing_password(db, monkeypatch):
    get_user_model().objects.create_superuser(username="ops", email="", password="changed in the admin")
    monkeypatch.setenv("DJANGO_SUPERUSER_USERNAME", "ops")
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "the first one")

    run("ensure_admin")

    assert get_user_model().objects.get(username="ops").check_password("changed in the admin")


def test_ensure_admin_is_content_with_any_existing_superuser(db, no_superuser_env):
    get_user_model().objects.create_superuser(username="alice", email="", password="x")

    assert "User 'alice' exists" in run("ensure_admin")
    assert not get_user_model().objects.filter(username="admin").exists()


# --- up ---------------------------------------------------------------------


def up_options(*args) -> dict:
    return vars(UpCommand().create_parser("manage.py", "up").parse_args(args))


def test_up_runs_one_worker_per_group_beside_web_beat_flower_and_the_smtp_sink():
    commands = dict(UpCommand().child_commands(up_options("--port", "8123", "--flower-port", "5123")))

    assert list(commands) == ["web", "worker:general", "worker:heavy", "beat", "flower", "smtp-sink"]
    assert commands["web"][2:] == ["runserver", "127.0.0.1:8123"]
    assert commands["smtp-sink"][2:] == ["smtp_sink"]
    assert commands["worker:heavy"][2:] == ["worker", "--group", "heavy", "--concurrency", "2", "--quiet"]
    assert commands["beat"][2:] == ["beat", "--quiet"]
    assert commands["flower"][2:] == ["flower", "--address", "127.0.0.1", "--port", "5123"]
    assert all(argv[0] == sys.executable and argv[1].endswith("manage.py") for argv in commands.values())


def test_up_can_leave_out_flower_beat_the_smtp_sink_and_reloading():
    commands = dict(UpCommand().child_commands(up_options("--no-flower", "--no-beat", "--no-smtp-sink", "--noreload")))

    assert list(commands) == ["web", "worker:general", "worker:heavy"]
    assert commands["web"][-1] == "--noreload"
    assert commands["worker:general"][-1] == "--no-autoreload"


def test_up_starts_no_smtp_sink_when_mail_goes_to_a_real_relay(settings):
    settings.EMAIL_HOST = "smtp.example.com"
    assert "smtp-sink" not in dict(UpCommand().child_commands(up_options()))


def test_up_refuses_a_port_in_use():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(CommandError, match=f"Port {port} on 127.0.0.1 is in use"):
            call_command("up", "--port", str(port), "--no-flower")


@override_settings(DEBUG=False)
def test_up_refuses_a_malformed_flower_login_before_touching_anything(monkeypatch):
    monkeypatch.setenv("FLOWER_BASIC_AUTH", "just-a-user")
    monkeypatch.setattr(up_command, "call_command", lambda *a, **k: pytest.fail("migrated before the Flower check"))

    with pytest.raises(CommandError, match="FLOWER_BASIC_AUTH"):
        call_command("up", "--port", str(free_port()), "--flower-port", str(free_port()))


def test_up_stops_everything_and_names_the_child_that_died(monkeypatch, tmp_path):
    pid_file = tmp_path / "sleeper.pid"
    programs = [
        (
            "sleeper",
            [
                sys.executable,
                "-c",
                f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)",
            ],
        ),
        (
            "crasher",
            [
                sys.executable,
                "-c",
                "import time; print('about to fail', flush=True); time.sleep(1); raise SystemExit(3)",
            ],
        ),
    ]
    monkeypatch.setattr(UpCommand, "child_commands", lambda self, options: programs)
    monkeypatch.setattr(up_command, "call_command", lambda *args, **kwargs: None)
    monkeypatch.setattr(up_command, "admin_ensure", lambda: AdminAccount(username="admin", created=False))
    out = StringIO()

    with pytest.raises(CommandError, match="crasher exited with code 3 unexpectedly; stopped the rest."):
        call_command("up", "--port", str(free_port()), "--no-flower", stdout=out)

    assert "crasher | about to fail" in out.getvalue()
    assert "Stopping sleeper, crasher" in out.getvalue()
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_file.read_text()), 0)


def test_up_prepares_the_filesystem_broker_tables(settings, tmp_path):
    control, queue = tmp_path / "control", tmp_path / "queue"
    control.mkdir()
    queue.mkdir()
    settings.CELERY_BROKER_URL = "filesystem://"
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {"control_folder": str(control), "data_folder_in": str(queue)}
    (control / "celeryev.exchange").write_text('[["#", "", "celeryev.a"]] "b"]]')  # two writers interleaved
    (control / "kit.exchange").write_text('[["default", "", "default"]]')
    (control / "celery.pidbox.exchange").write_text('[["", "", "general@old.celery.pidbox"]]')
    waiting = [
        message_name("default", 5),
        message_name("celeryev.dead-flower", 0),
        message_name("x.reply.celery.pidbox", 0),
    ]
    for name in waiting:
        (queue / name).write_text("{}")

    up_command.broker_tables_prepare()

    tables = {path.name: json.loads(path.read_text()) for path in control.iterdir()}
    assert tables == {
        "kit.exchange": [["default", "", "default"]],
        "celeryev.exchange": [],
        "celery.pidbox.exchange": [],
        "reply.celery.pidbox.exchange": [],
    }
    # Jobs wait for the next worker; events and replies for no one.
    assert [path.name for path in queue.iterdir()] == [waiting[0]]


# --- the process machinery under up --------------------------------------------


def test_stopping_children_terms_the_polite_and_kills_the_stubborn_with_their_children(tmp_path):
    lines: list[tuple[str, str]] = []
    children = Children(
        env={"PATH": "/usr/bin:/bin"}, cwd=tmp_path, write=lambda name, line: lines.append((name, line))
    )
    stubborn = (
        "import signal, subprocess, sys, time;"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN);"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']);"
        "print('holding on', flush=True); time.sleep(60)"
    )
    polite = children.start("polite", [sys.executable, "-c", "print('hello', flush=True); import time; time.sleep(60)"])
    mule = children.start("mule", [sys.executable, "-c", stubborn])
    wait_for(lambda: len(lines) == 2, timeout=10, what="both children to speak")

    killed = children.stop(grace=1, hurry=threading.Event())

    assert killed == [mule]
    assert sorted(lines) == [("mule", "holding on"), ("polite", "hello")]
    assert polite.returncode == -signal.SIGTERM
    assert not polite.running() and not mule.running()


def test_a_second_stop_signal_asks_to_hurry():
    before = signal.getsignal(signal.SIGINT)
    with StopSignals() as signals:
        signal.raise_signal(signal.SIGINT)
        assert signals.stop.is_set() and not signals.hurry.is_set()
        signal.raise_signal(signal.SIGTERM)
        assert signals.hurry.is_set()
    assert signal.getsignal(signal.SIGINT) is before


# --- the worker's reloader ----------------------------------------------------------


@pytest.mark.integration
def test_the_worker_reloader_restarts_the_worker_on_a_change_and_leaves_nothing_behind(tmp_path):
    """Django's reloader around a stand-in worker that prints its pid: a
    changed module starts a new worker after stopping the old one, and SIGTERM
    to the command takes every process down (the worker through its lifeline)."""
    watched = tmp_path / "kit_watched_module.py"
    watched.write_text("")
    fake_worker = (
        f"import os, sys, time; sys.path.insert(0, {str(REPO)!r});"
        "from jobs.management.commands._celery import stop_with_lifeline; stop_with_lifeline();"
        "print('worker', os.getpid(), flush=True); time.sleep(60)"
    )
    script = (
        f"import sys; sys.path.insert(0, {str(tmp_path)!r}); import kit_watched_module;"
        "from jobs.management.commands._celery import WorkerReloader;"
        f"WorkerReloader([sys.executable, '-c', {fake_worker!r}], notify=print).run()"
    )
    lines: list[str] = []
    process = subprocess.Popen(
        [sys.executable, "manage.py", "shell", "-c", script],
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    threading.Thread(target=lambda: lines.extend(line.rstrip() for line in process.stdout), daemon=True).start()

    def workers() -> list[int]:
        return [int(line.split()[1]) for line in list(lines) if line.startswith("worker ")]

    def group_gone() -> bool:
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return True
        return False

    try:
        [first] = wait_for(workers, timeout=30, what=f"the first worker: {lines}")

        time.sleep(2)  # the reloader's first look at the files, to compare with
        mtime = watched.stat().st_mtime + 2
        os.utime(watched, (mtime, mtime))
        wait_for(lambda: len(workers()) > 1, timeout=20, what=f"a restart: {lines}")
        assert workers()[1] != first
        with pytest.raises(ProcessLookupError):
            os.kill(first, 0)

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        wait_for(group_gone, timeout=10, what="the worker to stop with its reloader")
    finally:
        if not group_gone():
            os.killpg(process.pid, signal.SIGKILL)
