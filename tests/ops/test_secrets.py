"""Secrets and least privilege: the production settings and the compose
start scripts refuse placeholders and short secrets, naming the variable;
each compose service gets only the secrets it needs; RabbitMQ's app user is
no administrator and the monitoring user can look but not touch (checked on
the local RabbitMQ); secrets and local state stay out of the image."""

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import uuid

import pytest
from django.core.exceptions import ImproperlyConfigured
from kombu import Connection

from config.secrets import require_production_secrets, secret_problem
from tests.helpers import REPO
from tests.ops.compose_model import COMPOSE_DIR, ENV_EXAMPLE, filled_in_env, load, read_env_file
from tests.ops.http import http_get

HELPER = COMPOSE_DIR / "start" / "require-secret"
STRONG = secrets.token_hex(32)


def production_environ(**overrides) -> dict:
    environ = {
        "DJANGO_SECRET_KEY": STRONG + STRONG,
        "DATABASE_URL": f"postgres://kit:{STRONG}@postgres:5432/kit",
        "CELERY_BROKER_URL": f"amqp://kit:{STRONG}@rabbitmq:5672/kit",
        "METRICS_TOKEN": STRONG,
        "FLOWER_BASIC_AUTH": f"operator:{STRONG}",
        "FLOWER_BROKER_API": f"http://monitoring:{STRONG}@rabbitmq:15672/api/",
    }
    environ.update(overrides)
    return {name: value for name, value in environ.items() if value is not None}


def test_a_filled_in_environment_is_accepted():
    require_production_secrets(production_environ())


def test_secrets_a_process_is_not_given_are_not_asked_for():
    require_production_secrets(
        production_environ(METRICS_TOKEN=None, FLOWER_BASIC_AUTH=None, FLOWER_BROKER_API=None, DATABASE_URL=None)
    )


EXAMPLE = read_env_file(ENV_EXAMPLE)


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"DJANGO_SECRET_KEY": EXAMPLE["DJANGO_SECRET_KEY"]}, "DJANGO_SECRET_KEY is still a placeholder"),
        ({"DJANGO_SECRET_KEY": STRONG}, None),  # 64 characters: enough
        ({"DJANGO_SECRET_KEY": "x" * 20}, "DJANGO_SECRET_KEY is too short (20 characters, at least 50)"),
        ({"DJANGO_SECRET_KEY": None}, "DJANGO_SECRET_KEY is too short (0 characters"),
        (
            {"DATABASE_URL": f"postgres://kit:{EXAMPLE['POSTGRES_PASSWORD']}@postgres:5432/kit"},
            "The password in DATABASE_URL is still a placeholder",
        ),
        ({"CELERY_BROKER_URL": "amqp://kit:short@rabbitmq:5672/kit"}, "The password in CELERY_BROKER_URL is too short"),
        ({"METRICS_TOKEN": EXAMPLE["METRICS_TOKEN"]}, "METRICS_TOKEN is still a placeholder"),
        ({"FLOWER_BASIC_AUTH": EXAMPLE["FLOWER_BASIC_AUTH"]}, "The password of operator in FLOWER_BASIC_AUTH is still"),
        ({"FLOWER_BASIC_AUTH": f"a:{STRONG},b:tiny"}, "The password of b in FLOWER_BASIC_AUTH is too short"),
        ({"FLOWER_BROKER_API": "http://monitoring:CHANGE-ME-please-0123@rabbitmq:15672/api/"}, "FLOWER_BROKER_API"),
    ],
)
def test_a_placeholder_or_short_secret_is_refused_naming_the_variable(overrides, named):
    environ = production_environ(**overrides)
    if named is None:
        require_production_secrets(environ)
        return
    with pytest.raises(ImproperlyConfigured) as refused:
        require_production_secrets(environ)
    assert named in str(refused.value)


def manage_check_deploy(env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy"],
        cwd=REPO,
        env={**os.environ, **env, "DJANGO_SETTINGS_MODULE": "config.settings.production"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_production_settings_refuse_the_env_example_as_it_is_and_pass_check_deploy_once_filled_in():
    as_shipped = manage_check_deploy({**load()["web"].environment, "DJANGO_SECURE_COOKIES": "true"})
    assert as_shipped.returncode != 0
    assert "DJANGO_SECRET_KEY is still a placeholder" in as_shipped.stderr

    filled_in = manage_check_deploy({**load(filled_in_env())["web"].environment, "DJANGO_SECURE_COOKIES": "true"})
    assert filled_in.returncode == 0, filled_in.stderr


def shell_verdict(value: str, min_length: int) -> str | None:
    done = subprocess.run(
        ["sh", "-c", f'set -eu; . "{HELPER}"; require_secret SOME_SECRET {min_length}'],
        env={"PATH": os.environ["PATH"], "SOME_SECRET": value},
        capture_output=True,
        text=True,
    )
    return None if done.returncode == 0 else done.stderr


@pytest.mark.parametrize(
    "value",
    ["", "short", "change-me-rabbitmq-0123456789", "CHANGEME0123456789abcdef", "replace-me-0123456789", STRONG],
)
def test_the_start_scripts_helper_and_the_settings_agree(value):
    python = secret_problem(value, 16)
    shell = shell_verdict(value, 16)
    assert (python is None) == (shell is None), (python, shell)
    if shell is not None:
        assert shell.startswith(f"SOME_SECRET {python.split(' (')[0]}")


@pytest.mark.parametrize(
    ("service", "variable"),
    [("rabbitmq", "RABBITMQ_PASSWORD"), ("rabbitmq", "RABBITMQ_MONITORING_PASSWORD"), ("prometheus", "METRICS_TOKEN"),
     ("postgres", "POSTGRES_PASSWORD")],
)  # fmt: skip
def test_each_start_script_of_a_non_django_service_refuses_its_example_placeholder(service, variable, tmp_path):
    spec = load(filled_in_env())[service]
    script = spec.host_path(spec.argv[0])
    env = {
        **spec.environment,
        variable: EXAMPLE[variable],
        "PATH": os.environ["PATH"],
        "RABBITMQ_DEFINITIONS_DIR": str(tmp_path),
        "METRICS_TOKEN_FILE": str(tmp_path / "token"),
    }
    done = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True)
    assert done.returncode == 1
    assert f"{variable} is still a placeholder" in done.stderr
    assert not list(tmp_path.iterdir()), "nothing is written before the check"


def test_each_service_gets_only_the_secrets_it_needs():
    env = filled_in_env()
    secret_names = [name for name, value in read_env_file(ENV_EXAMPLE).items() if "change-me" in value]
    app = {"DJANGO_SECRET_KEY", "POSTGRES_PASSWORD", "RABBITMQ_PASSWORD"}
    expected = {
        "web": app | {"METRICS_TOKEN"},
        "release": app,
        "worker-general": app,
        "worker-heavy": app,
        "beat": app,
        "flower": {"DJANGO_SECRET_KEY", "RABBITMQ_PASSWORD", "RABBITMQ_MONITORING_PASSWORD", "FLOWER_BASIC_AUTH"},
        "rabbitmq": {"RABBITMQ_PASSWORD", "RABBITMQ_MONITORING_PASSWORD"},
        "postgres": {"POSTGRES_PASSWORD"},
        "prometheus": {"METRICS_TOKEN"},
        "grafana": {"GRAFANA_ADMIN_PASSWORD"},
    }
    for service in load(env).values():
        values = " ".join(service.environment.values())
        given = {name for name in secret_names if env[name].rpartition(":")[2] in values}
        assert given == expected.get(service.name, set()), service.name


def test_images_are_current_rabbitmq_and_postgresql():
    services = load()
    assert services["rabbitmq"].spec["image"] == "rabbitmq:4.2-management"
    assert services["postgres"].spec["image"].split(":")[1].split("-")[0] == "17"


def test_the_build_context_keeps_git_the_virtualenv_state_and_env_files_out_for_both_builders():
    top_level = (REPO / ".dockerignore").read_text()
    assert (COMPOSE_DIR / "Dockerfile.dockerignore").read_text() == top_level
    patterns = {line for line in top_level.splitlines() if line and not line.startswith("#")}
    assert {".git", ".venv", "var", "**/.env", "**/*.env"} <= patterns


@pytest.mark.integration
def test_on_rabbitmq_the_app_user_works_its_vhost_without_management_and_the_monitoring_user_only_looks(
    real_services, tmp_path
):
    """The users.json the compose start script writes, imported into the
    local RabbitMQ under throwaway names and vhost."""
    suffix = uuid.uuid4().hex[:6]
    vhost, app_user, monitoring_user = f"kit-test-ops-users-{suffix}", f"kit-{suffix}", f"monitoring-{suffix}"
    spec = load(filled_in_env())["rabbitmq"]
    env = {
        **spec.environment,
        "RABBITMQ_USER": app_user,
        "RABBITMQ_MONITORING_USER": monitoring_user,
        "PATH": f"{tmp_path}:{os.environ['PATH']}",
        "RABBITMQ_DEFINITIONS_DIR": str(tmp_path),
    }
    for stub in ("chown", "docker-entrypoint.sh"):
        (tmp_path / stub).write_text("#!/bin/sh\nexit 0\n")
        (tmp_path / stub).chmod(0o755)
    done = subprocess.run(["bash", str(spec.host_path(spec.argv[0]))], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    users = (tmp_path / "users.json").read_text().replace('"kit"', f'"{vhost}"')
    app_password, monitoring_password = env["RABBITMQ_PASSWORD"], env["RABBITMQ_MONITORING_PASSWORD"]
    rabbitmqctl = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    try:
        with tempfile.NamedTemporaryFile("w", suffix=".json", dir="/tmp") as file:
            file.write(users)
            file.flush()
            os.chmod(file.name, 0o644)  # read by the rabbitmq user; throwaway users
            imported = subprocess.run([rabbitmqctl, "-q", "import_definitions", file.name], capture_output=True)
        assert imported.returncode == 0, imported.stderr

        from django.conf import settings

        with Connection(f"amqp://{app_user}:{app_password}@127.0.0.1:5672/{vhost}", connect_timeout=5) as connection:
            channel = connection.channel()
            for queue in settings.CELERY_TASK_QUEUES:
                queue(channel).declare()
            channel.basic_publish(channel.prepare_message(b"job"), exchange="", routing_key="default")
        status, _ = http_get("http://127.0.0.1:15672/api/overview", login=(app_user, app_password))
        assert status == 401, "the app user must not reach the management API"

        status, queues = http_get(
            f"http://127.0.0.1:15672/api/queues/{vhost}", login=(monitoring_user, monitoring_password)
        )
        assert status == 200 and {q["name"] for q in queues} >= {"default", "images", "email", "reports"}
        monitoring_url = f"amqp://{monitoring_user}:{monitoring_password}@127.0.0.1:5672/{vhost}"
        with Connection(monitoring_url, connect_timeout=5) as connection:
            channel = connection.channel()
            with pytest.raises(connection.channel_errors):  # ACCESS_REFUSED
                channel.basic_get("default")
    finally:
        subprocess.run([rabbitmqctl, "-q", "delete_vhost", vhost], capture_output=True)
        for user in (app_user, monitoring_user):
            subprocess.run([rabbitmqctl, "-q", "delete_user", user], capture_output=True)
