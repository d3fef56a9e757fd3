"""Each start script of compose/ run for real, with the programs it would
start replaced by stubs that record their command line; each command line
then checked the way its program would (Django's argument parsers,
gunicorn --check-config). Plus Django's deployment checks with the
production settings, and RabbitMQ importing the definitions."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from django.conf import settings
from django.core.management import get_commands, load_command_class
from kombu import Connection

from jobs.queues import WORKER_GROUPS, QueueType, dead_letter_notice_queue, dead_letter_queue
from tests.helpers import REPO, wait_for
from tests.ops.compose_model import COMPOSE_DIR, definitions_imported, filled_in_env, load
from tests.ops.http import http_get

STUBBED = ("python", "gunicorn", "prometheus", "docker-entrypoint.sh", "chown")
STUB = """#!/bin/sh
# Records how it was called, one JSON list per line, and succeeds.
exec "{python}" -c 'import json, os, sys; \\
open(os.environ["STUB_LOG"], "a").write(json.dumps(sys.argv[1:]) + "\\n")' "$(basename "$0")" "$@"
"""


@pytest.fixture
def stubs(tmp_path):
    folder = tmp_path / "bin"
    folder.mkdir()
    for name in STUBBED:
        (folder / name).write_text(STUB.format(python=sys.executable))
        (folder / name).chmod(0o755)
    return folder


def run_start_script(service_name: str, stubs, tmp_path, **extra_env) -> list[list[str]]:
    """Run the service's start script with its compose environment; return
    the calls the stubs recorded, program name first."""
    service = load(filled_in_env())[service_name]
    script = service.host_path(service.argv[0])
    log = tmp_path / f"{service_name}.calls"
    env = {
        **service.environment,
        **extra_env,
        "PATH": f"{stubs}:{os.environ['PATH']}",
        "STUB_LOG": str(log),
        "HOSTNAME": "c0ffee",
    }
    syntax = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr
    done = subprocess.run(["bash", str(script)], cwd=REPO, env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, f"{script.name} failed:\n{done.stderr}"
    return [json.loads(line) for line in log.read_text().splitlines()]


def parse_management_command(argv: list[str]):
    """`python manage.py NAME ARGS`, parsed by NAME's own argument parser:
    an unknown option or a bad value fails here as it would in the container."""
    assert argv[:2] == ["python", "manage.py"], argv
    name, args = argv[2], argv[3:]
    command = load_command_class(get_commands()[name], name)
    return command, command.create_parser("manage.py", name).parse_args(args)


def production_env(service_name: str) -> dict:
    """The service's environment from a filled-in compose/.env (the
    production settings refuse the example's placeholders)."""
    return {**os.environ, **load(filled_in_env())[service_name].environment, "DJANGO_SECURE_COOKIES": "true"}


def test_the_web_start_script_runs_gunicorn_on_the_wsgi_app_with_a_config_gunicorn_accepts(stubs, tmp_path):
    [call] = run_start_script("web", stubs, tmp_path)
    assert call[0] == "gunicorn" and call[1] == "config.wsgi:application"
    gunicorn = shutil.which("gunicorn", path=os.path.dirname(sys.executable))
    # --check-config loads the app (the production settings) and exits.
    checked = subprocess.run(
        [gunicorn, "--check-config", *call[1:]], cwd=REPO, env=production_env("web"), capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stderr + checked.stdout


@pytest.mark.parametrize("service", ["worker-general", "worker-heavy"])
def test_each_worker_start_script_starts_its_group_with_its_caps(service, stubs, tmp_path):
    [call] = run_start_script(service, stubs, tmp_path)
    command, options = parse_management_command(call)
    environment = load()[service].environment
    assert command.selected_queues(vars(options)) == [q.value for q in WORKER_GROUPS[environment["WORKER_GROUP"]]]
    assert options.concurrency == int(environment["WORKER_CONCURRENCY"])
    assert options.max_memory_per_child == int(environment["WORKER_MAX_MEMORY_PER_CHILD_KIB"])
    assert options.autoreload is False


def test_beat_flower_and_release_start_scripts_run_commands_that_parse(stubs, tmp_path):
    [beat] = run_start_script("beat", stubs, tmp_path)
    parse_management_command(beat)
    [flower] = run_start_script("flower", stubs, tmp_path)
    _, options = parse_management_command(flower)
    assert (options.address, options.port) == ("0.0.0.0", 5555)
    migrate, collectstatic = run_start_script("release", stubs, tmp_path)
    assert parse_management_command(migrate)[1].interactive is False
    assert parse_management_command(collectstatic)[1].clear is True


def test_the_production_settings_pass_djangos_deployment_checks():
    done = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy"],
        cwd=REPO,
        env={**production_env("web"), "DJANGO_SETTINGS_MODULE": "config.settings.production"},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr


def test_the_prometheus_start_script_writes_the_token_and_runs_with_the_mounted_config(stubs, tmp_path):
    token_file = tmp_path / "token"
    [call] = run_start_script("prometheus", stubs, tmp_path, METRICS_TOKEN_FILE=str(token_file))
    assert token_file.read_text() == filled_in_env()["METRICS_TOKEN"]
    assert oct(token_file.stat().st_mode & 0o777) == "0o600"
    config = next(arg.split("=", 1)[1] for arg in call if arg.startswith("--config.file="))
    assert load()["prometheus"].host_path(config) == (COMPOSE_DIR / "prometheus" / "prometheus.yml").resolve()


def test_the_rabbitmq_start_script_writes_its_user_beside_the_definitions(stubs, tmp_path):
    [chown, entrypoint] = run_start_script("rabbitmq", stubs, tmp_path, RABBITMQ_DEFINITIONS_DIR=str(tmp_path))
    users = json.loads((tmp_path / "users.json").read_text())
    environment = load(filled_in_env())["rabbitmq"].environment
    app, monitoring = users["users"]
    assert (app["name"], app["password"]) == (environment["RABBITMQ_USER"], environment["RABBITMQ_PASSWORD"])
    assert app["tags"] == ""  # no management access, let alone administrator
    assert (monitoring["name"], monitoring["password"], monitoring["tags"]) == (
        environment["RABBITMQ_MONITORING_USER"],
        environment["RABBITMQ_MONITORING_PASSWORD"],
        "monitoring",
    )
    definitions = json.loads((COMPOSE_DIR / "rabbitmq/definitions.json").read_text())
    assert {permission["vhost"] for permission in users["permissions"]} == {definitions["vhosts"][0]["name"]}
    monitoring_rights = next(p for p in users["permissions"] if p["user"] == monitoring["name"])
    assert (monitoring_rights["configure"], monitoring_rights["write"], monitoring_rights["read"]) == ("^$",) * 3
    assert chown == ["chown", "rabbitmq:rabbitmq", str(tmp_path / "users.json")]
    assert entrypoint == ["docker-entrypoint.sh", "rabbitmq-server"]


def test_the_rabbitmq_start_script_refuses_a_password_that_would_need_escaping(stubs, tmp_path):
    service = load(filled_in_env())["rabbitmq"]
    env = {
        **service.environment,
        "RABBITMQ_PASSWORD": 'a-long-password-with-a"quote',
        "PATH": f"{stubs}:{os.environ['PATH']}",
        "STUB_LOG": str(tmp_path / "log"),
        "RABBITMQ_DEFINITIONS_DIR": str(tmp_path),
    }
    done = subprocess.run(["bash", str(service.host_path(service.argv[0]))], env=env, capture_output=True, text=True)
    assert done.returncode == 1 and "RABBITMQ_PASSWORD must be" in done.stderr
    assert not (tmp_path / "users.json").exists()


@pytest.mark.integration
def test_rabbitmq_imports_the_definitions_and_celery_declares_its_queues_over_them(real_services):
    """Into a throwaway vhost of the local RabbitMQ: a queue that Celery
    declares with other arguments than the definitions would be refused
    (PRECONDITION_FAILED), so this proves they agree."""
    with definitions_imported(COMPOSE_DIR / "rabbitmq/definitions.json", prefix="kit-test-ops-defs") as vhost:
        with Connection(f"amqp://guest:guest@127.0.0.1:5672/{vhost}", connect_timeout=5) as connection:
            channel = connection.channel()
            for queue in settings.CELERY_TASK_QUEUES:
                queue(channel).declare()
            # What workers declare besides (jobs.worker_consumer).
            dead_letter_queue(QueueType.CLASSIC)(channel).declare()
            dead_letter_notice_queue(QueueType.CLASSIC)(channel).declare()

        def dead_lettering():
            status, queue = http_get(f"http://127.0.0.1:15672/api/queues/{vhost}/default", login=("guest", "guest"))
            return status == 200 and queue.get("effective_policy_definition", {}).get("dead-letter-exchange")

        assert wait_for(dead_lettering, timeout=10, what="the dead-letter policy to apply") == "kit.dlx"
