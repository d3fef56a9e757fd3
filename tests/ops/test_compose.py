"""compose/ is validated, not run (there is no Docker engine here): the
compose client's own check, then what it cannot know: that scripts, files,
variables and ports referenced exist and agree, and that the broker, worker
and monitoring configuration matches the kit's code."""

import json
import os
import re
import shutil
import subprocess
from urllib.parse import urlparse

import pytest
import yaml
from django.conf import settings

from jobs.management.commands.worker import MAX_MEMORY_PER_CHILD_KIB
from jobs.queues import (
    DEAD_LETTER_NOTICE_QUEUE_NAME,
    DEAD_LETTER_QUEUE_NAME,
    QUEUE_TIME_LIMITS,
    RABBITMQ_CONSUMER_TIMEOUT_SECONDS,
    WORKER_GROUPS,
    Queue,
    QueueType,
)
from tests.ops.compose_model import (
    COMPOSE_DIR,
    COMPOSE_FILE,
    ENV_EXAMPLE,
    load,
    read_env_file,
    referenced_variables,
    seconds,
)

DEFINITIONS = COMPOSE_DIR / "rabbitmq" / "definitions.json"
RABBITMQ_CONF = COMPOSE_DIR / "rabbitmq" / "rabbitmq.conf"
PROMETHEUS_CONF = COMPOSE_DIR / "prometheus" / "prometheus.yml"
STRICT_MODE = "set -o errexit -o nounset -o pipefail"
# What a worker process needs beside its pool children (MiB).
WORKER_MAIN_PROCESS_MIB = 256
# Ports the images of these services listen on (the kit's own come from
# their start scripts, below).
IMAGE_PORTS = {
    "postgres": {5432},
    "rabbitmq": {5672, 15672, 15692},
    "prometheus": {9090},
    "alertmanager": {9093},
    "grafana": {3000},
    "mailpit": {1025, 8025},
    "proxy": {80},
}


def compose_client() -> list[str]:
    """`docker compose` if the Docker CLI has the plugin, else the
    standalone `docker-compose`: `config` needs neither an engine."""
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    pytest.fail("No compose client. Install one: apt-get install -y --no-install-recommends docker-compose")


def services_running(script: str) -> list[str]:
    return [name for name, service in load().items() if service.argv[:1] == [f"/app/compose/start/{script}"]]


def listening_ports() -> dict[str, set[int]]:
    """Service -> ports its process listens on inside its container."""
    ports = {name: set(numbers) for name, numbers in IMAGE_PORTS.items()}
    web = (COMPOSE_DIR / "start" / "web").read_text()
    flower = (COMPOSE_DIR / "start" / "flower").read_text()
    ports["web"] = {int(re.search(r"--bind 0\.0\.0\.0:(\d+)", web).group(1))}
    ports["flower"] = {int(re.search(r"--port (\d+)", flower).group(1))}
    return ports


# -- The compose client ---------------------------------------------------------


def test_docker_compose_accepts_the_file_and_will_not_start_without_its_secrets(tmp_path):
    client = compose_client()
    env = {name: value for name, value in os.environ.items() if name not in read_env_file(ENV_EXAMPLE)}
    check = [*client, "--file", str(COMPOSE_FILE), "--env-file"]

    done = subprocess.run([*check, str(ENV_EXAMPLE), "config", "--quiet"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr

    empty = tmp_path / "empty.env"
    empty.write_text("")
    done = subprocess.run([*check, str(empty), "config", "--quiet"], env=env, capture_output=True, text=True)
    assert done.returncode != 0 and "set DJANGO_SECRET_KEY in compose/.env" in done.stderr, done.stderr


# -- Files, scripts and variables -----------------------------------------------


def test_every_variable_the_file_uses_is_in_the_env_example_and_every_example_is_used():
    used = referenced_variables(COMPOSE_FILE.read_text())
    assert used == set(read_env_file(ENV_EXAMPLE))


def test_every_start_script_is_strict_ends_in_exec_and_exists_where_the_container_looks():
    for service in load().values():
        if not service.argv:
            continue  # the image's own entrypoint
        script = service.host_path(service.argv[0])
        if script is None:
            continue  # a program of the image (none today)
        assert script.is_file() and os.access(script, os.X_OK), f"{service.name}: {script} is not an executable file"
        text = script.read_text()
        assert text.startswith("#!"), script
        assert STRICT_MODE in text, f"{script} must start with `{STRICT_MODE}`"
        commands = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
        last_command = next(line for line in reversed(commands) if not line.startswith(("  ", "\t")))
        assert last_command.startswith("exec "), f"{script} must end by exec-ing its program"


def test_every_mounted_file_and_the_build_exist():
    for service in load().values():
        for target, source in service.bind_mounts.items():
            assert source.exists(), f"{service.name}: {source} (mounted at {target}) is missing"
        if service.uses_app_image:
            build = service.spec["build"]
            assert (COMPOSE_DIR / build["context"] / build["dockerfile"]).is_file()
    assert (COMPOSE_DIR / "Dockerfile.dockerignore").is_file()


def test_start_scripts_only_read_variables_their_service_sets():
    for service in load().values():
        script = service.host_path(service.argv[0]) if service.argv else None
        if script is None:
            continue
        text = script.read_text()
        # ${NAME} with no default must be set; ${NAME:-x} may be missing.
        needed = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)\}", text))
        missing = needed - set(service.environment)
        assert not missing, f"{service.name}: {script.name} reads {missing}, which the service does not set"


# -- Workers, beat, health --------------------------------------------------------


def test_there_is_one_scalable_worker_service_per_queue_group_with_caps_that_fit_its_queues():
    workers = {service.environment["WORKER_GROUP"]: service for service in map(load().get, services_running("worker"))}
    assert set(workers) == set(WORKER_GROUPS)
    for group, service in workers.items():
        assert service.name == f"worker-{group}"
        # `--scale` starts several containers: none may claim a name or a host port.
        assert "container_name" not in service.spec and "ports" not in service.spec
        concurrency = int(service.environment["WORKER_CONCURRENCY"])
        per_child_mib = int(service.environment["WORKER_MAX_MEMORY_PER_CHILD_KIB"]) // 1024
        assert per_child_mib <= MAX_MEMORY_PER_CHILD_KIB // 1024 * 2, "a child cap far above the kit's default"
        assert service.memory_limit_mib >= concurrency * per_child_mib + WORKER_MAIN_PROCESS_MIB, group
        longest = max(QUEUE_TIME_LIMITS[queue].hard for queue in WORKER_GROUPS[group])
        assert seconds(service.spec["stop_grace_period"]) >= longest, f"{group}: running tasks are killed on stop"


def test_beat_runs_exactly_once():
    assert services_running("beat") == ["beat"]
    assert load()["beat"].spec["deploy"]["replicas"] == 1


def test_every_long_running_service_has_a_healthcheck_and_the_release_step_runs_once():
    for service in load().values():
        if service.name in ("beat", "release"):
            continue  # said why in the file; release exits
        assert service.spec.get("healthcheck", {}).get("test"), f"{service.name} has no healthcheck"
    assert load()["release"].spec["restart"] == "no"
    for name in ("web", *services_running("worker"), "beat"):
        assert load()[name].spec["depends_on"]["release"] == {"condition": "service_completed_successfully"}


# -- Ports and addresses -----------------------------------------------------------


def test_published_ports_are_distinct_and_reach_a_listening_port():
    listening = listening_ports()
    host_ports = []
    for service in load().values():
        for host, container in service.published_ports:
            host_ports.append(host)
            assert container in listening[service.name], f"{service.name} publishes {container}, nothing listens there"
    assert len(host_ports) == len(set(host_ports))


def test_every_address_one_service_uses_for_another_is_a_port_it_listens_on():
    listening = listening_ports()
    services = load()
    env = services["web"].environment
    targets = [
        (urlparse(env["DATABASE_URL"]).hostname, urlparse(env["DATABASE_URL"]).port),
        (urlparse(env["CELERY_BROKER_URL"]).hostname, urlparse(env["CELERY_BROKER_URL"]).port),
        (env["EMAIL_HOST"], int(env["EMAIL_PORT"])),
    ]
    for job in yaml.safe_load(PROMETHEUS_CONF.read_text())["scrape_configs"]:
        for static in job["static_configs"]:
            targets += [(host, int(port)) for host, port in (t.split(":") for t in static["targets"])]
    datasource = yaml.safe_load((COMPOSE_DIR / "grafana/provisioning/datasources/prometheus.yml").read_text())
    url = urlparse(datasource["datasources"][0]["url"])
    targets.append((url.hostname, url.port))
    nginx = (COMPOSE_DIR / "nginx" / "nginx.conf").read_text()
    targets += [(host, int(port)) for host, port in re.findall(r"server (\w+):(\d+);", nginx)]
    for host, port in targets:
        assert host in services, f"{host} is not a service"
        assert port in listening[host], f"{host} does not listen on {port}"
    # Each healthcheck asks its own service on a port it listens on.
    for service in services.values():
        test = " ".join(service.spec.get("healthcheck", {}).get("test", []))
        for port in re.findall(r"127\.0\.0\.1:(\d+)", test):
            assert int(port) in listening[service.name], f"{service.name}'s healthcheck asks port {port}"


# -- RabbitMQ ---------------------------------------------------------------------


def test_rabbitmq_definitions_declare_the_queues_exactly_as_celery_does():
    definitions = json.loads(DEFINITIONS.read_text())
    vhost = urlparse(load()["web"].environment["CELERY_BROKER_URL"]).path.lstrip("/")
    assert definitions["vhosts"] == [{"name": vhost}]
    assert f"vhost={vhost}\n" in (COMPOSE_DIR / "start" / "rabbitmq").read_text()
    kinds = ("exchanges", "queues", "bindings", "policies")
    assert {item["vhost"] for kind in kinds for item in definitions[kind]} == {vhost}

    declared = {queue["name"]: queue for queue in definitions["queues"]}
    for queue in settings.CELERY_TASK_QUEUES:
        expected = {"durable": queue.durable, "auto_delete": queue.auto_delete, "arguments": queue.queue_arguments}
        assert {key: declared[queue.name][key] for key in expected} == expected, queue.name
        binding = {"source": queue.exchange.name, "destination": queue.name, "routing_key": queue.routing_key}
        assert any(binding.items() <= item.items() for item in definitions["bindings"]), binding
    exchange = settings.CELERY_TASK_QUEUES[0].exchange
    assert {"name": exchange.name, "type": exchange.type, "durable": exchange.durable}.items() <= next(
        item for item in definitions["exchanges"] if item["name"] == exchange.name
    ).items()
    assert {queue.name for queue in settings.CELERY_TASK_QUEUES} == {queue.value for queue in Queue}


def test_the_kit_queues_and_only_they_dead_letter_to_a_bound_queue():
    definitions = json.loads(DEFINITIONS.read_text())
    policies = [p for p in definitions["policies"] if "dead-letter-exchange" in p["definition"]]
    assert len(policies) == 1
    policy = policies[0]
    others = ["kit.dead", "kit.dead.jobs", "celeryev.1f2e", "celery@host.celery.pidbox", "0b1e.reply.celery.pidbox"]
    assert [name for name in [*Queue, *others] if re.search(policy["pattern"], name)] == list(Queue)
    dlx = policy["definition"]["dead-letter-exchange"]
    assert dlx in {exchange["name"] for exchange in definitions["exchanges"]}
    assert any(binding["source"] == dlx for binding in definitions["bindings"])
    # The queue /metrics reports as kit_dead_letter_messages is the one
    # bound, and so is the kit's copy of it (jobs.maintenance.
    # jobs_mark_dead_lettered).
    assert {(b["source"], b["destination"]) for b in definitions["bindings"]} >= {
        (dlx, DEAD_LETTER_QUEUE_NAME[QueueType.CLASSIC]),
        (dlx, DEAD_LETTER_NOTICE_QUEUE_NAME[QueueType.CLASSIC]),
    }


def test_rabbitmq_lets_a_worker_hold_a_message_longer_than_any_hard_time_limit():
    conf = {
        key.strip(): value.strip()
        for key, _, value in (line.partition("=") for line in RABBITMQ_CONF.read_text().splitlines())
        if key.strip() and not key.startswith("#")
    }
    timeout_ms = int(conf["consumer_timeout"])
    assert timeout_ms == RABBITMQ_CONSUMER_TIMEOUT_SECONDS * 1000
    assert timeout_ms > max(limits.hard for limits in QUEUE_TIME_LIMITS.values()) * 1000
    # Definitions are loaded from the folder where compose mounts them.
    rabbitmq = load()["rabbitmq"]
    assert rabbitmq.host_path(conf["load_definitions"] + "/topology.json") == DEFINITIONS


# -- Monitoring --------------------------------------------------------------------


def test_prometheus_reads_the_token_file_its_start_script_writes():
    job = next(job for job in yaml.safe_load(PROMETHEUS_CONF.read_text())["scrape_configs"] if job["job_name"] == "kit")
    script = (COMPOSE_DIR / "start" / "prometheus").read_text()
    assert f"${{METRICS_TOKEN_FILE:-{job['authorization']['credentials_file']}}}" in script
    assert job["metrics_path"] == "/metrics"


@pytest.mark.django_db
def test_grafana_and_prometheus_only_ask_for_metrics_the_kit_exports(monkeypatch):
    from ops import broker, metrics

    monkeypatch.setattr(broker, "queue_depths", lambda: {})
    monkeypatch.setattr(broker, "workers_online", lambda: [])
    monkeypatch.setattr(broker, "dead_letter_messages", lambda: 0)
    monkeypatch.setattr(broker, "workers_resources", lambda: [])
    exported = set()
    for family in metrics.registry().collect():
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}.get(family.type, ("",))
        exported |= {family.name + suffix for suffix in suffixes}

    dashboard = json.loads((COMPOSE_DIR / "grafana" / "dashboards" / "kit-jobs.json").read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    asked = {name for expression in expressions for name in re.findall(r"\bkit_[a-z_]+", expression)}
    assert asked and asked <= exported, asked - exported
    datasource = yaml.safe_load((COMPOSE_DIR / "grafana/provisioning/datasources/prometheus.yml").read_text())
    assert {panel["datasource"]["uid"] for panel in dashboard["panels"]} == {datasource["datasources"][0]["uid"]}
    provider = yaml.safe_load((COMPOSE_DIR / "grafana/provisioning/dashboards/kit.yml").read_text())["providers"][0]
    assert (
        load()["grafana"].host_path(provider["options"]["path"]) == (COMPOSE_DIR / "grafana" / "dashboards").resolve()
    )
