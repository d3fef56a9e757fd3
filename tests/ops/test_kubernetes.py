"""deploy/kubernetes/ validated offline: the base and the production overlay
rendered by kustomize (`kubectl kustomize`, no cluster), every object
checked against the Kubernetes API schemas (kubernetes-validate, strict)
and KEDA's two kinds against the fields KEDA documents; then checked against
the kit itself: queues and worker groups from jobs/queues.py, time limits
and grace periods, images, commands and environment variables that exist,
secrets only by reference, cheap probes, one beat."""

import copy
import os
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from django.core.management import get_commands

from config.secrets import require_production_secrets
from jobs.queues import QUEUE_TIME_LIMITS, WORKER_GROUPS, Queue
from ops.worker_liveness import ENV as LIVENESS_ENV
from tests.helpers import REPO
from tests.ops.compose_model import load as load_compose

KUBERNETES = REPO / "deploy" / "kubernetes"
BUILDS = {"base": KUBERNETES / "base", "production": KUBERNETES / "overlays" / "production"}
# The oldest Kubernetes still maintained when this was written; the
# manifests use nothing newer.
KUBERNETES_VERSION = "1.32.0"

# KEDA's kinds are custom resources, outside Kubernetes' schemas. These are
# the fields of keda.sh/v1alpha1 (KEDA 2.x, https://keda.sh/docs/latest/
# reference/scaledobject-spec/ and the RabbitMQ scaler's page) that the
# manifests may use, unknown fields refused, as the API server's structural
# schema would. (KEDA's generated Python models, cloudcoil.models.keda, were
# tried: they ignore unknown fields and install a pytest plugin that needs a
# package they do not declare.)
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": {"type": "string"}, "namespace": {"type": "string"}, "labels": _STRING_MAP,
                   "annotations": _STRING_MAP},
    "additionalProperties": False,
}  # fmt: skip
_RABBITMQ_METADATA = {
    "type": "object",
    "required": ["queueName", "mode", "value"],
    "properties": {
        "protocol": {"enum": ["amqp", "http", "auto"]},
        "mode": {"enum": ["QueueLength", "MessageRate"]},
        "value": {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?$"},
        "activationValue": {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?$"},
        "queueName": {"type": "string", "minLength": 1},
        "vhostName": {"type": "string"},
        "excludeUnacknowledged": {"enum": ["true", "false"]},
    },
    "additionalProperties": False,
}
KEDA_SCHEMAS = {
    "ScaledObject": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "keda.sh/v1alpha1"},
            "kind": {"const": "ScaledObject"},
            "metadata": _METADATA,
            "spec": {
                "type": "object",
                "required": ["scaleTargetRef", "triggers"],
                "properties": {
                    "scaleTargetRef": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {"name": {"type": "string"}, "kind": {"type": "string"},
                                       "apiVersion": {"type": "string"}},
                        "additionalProperties": False,
                    },
                    "pollingInterval": {"type": "integer", "minimum": 1},
                    "cooldownPeriod": {"type": "integer", "minimum": 0},
                    "minReplicaCount": {"type": "integer", "minimum": 0},
                    "maxReplicaCount": {"type": "integer", "minimum": 1},
                    "triggers": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["type", "metadata"],
                            "properties": {
                                "type": {"const": "rabbitmq"},
                                "name": {"type": "string"},
                                "metadata": _RABBITMQ_METADATA,
                                "authenticationRef": {
                                    "type": "object",
                                    "required": ["name"],
                                    "properties": {"name": {"type": "string"},
                                                   "kind": {"enum": ["TriggerAuthentication",
                                                                     "ClusterTriggerAuthentication"]}},
                                    "additionalProperties": False,
                                },
                            },
                            "additionalProperties": False,
                        },
                    },
                },
                "additionalProperties": False,
            },
        },
        "additionalProperties": False,
    },
    "TriggerAuthentication": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "keda.sh/v1alpha1"},
            "kind": {"const": "TriggerAuthentication"},
            "metadata": _METADATA,
            "spec": {
                "type": "object",
                "properties": {
                    "secretTargetRef": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["parameter", "name", "key"],
                            "properties": {"parameter": {"type": "string"}, "name": {"type": "string"},
                                           "key": {"type": "string"}},
                            "additionalProperties": False,
                        },
                    }
                },
                "additionalProperties": False,
            },
        },
        "additionalProperties": False,
    },
}  # fmt: skip
# Seconds a warm shutdown may need beyond the longest hard time limit (the
# task's own cleanup, the final acknowledgement, the process exit).
GRACE_MARGIN_SECONDS = 20
# Variables that hold secrets: only ever from the Secret, by reference.
SECRET_VARIABLES = {
    "DJANGO_SECRET_KEY",
    "DATABASE_URL",
    "CELERY_BROKER_URL",
    "METRICS_TOKEN",
    "FLOWER_BASIC_AUTH",
    "FLOWER_BROKER_API",
}


def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.fail("kubectl is missing (it renders kustomize offline): apt-get install kubernetes-client")
    return path


@cache
def render(build: str) -> tuple[dict, ...]:
    done = subprocess.run([kubectl(), "kustomize", str(BUILDS[build])], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return tuple(document for document in yaml.safe_load_all(done.stdout) if document)


def objects(build: str, kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in render(build) if o["kind"] == kind}


def containers(build: str):
    """(object name, pod spec, container) of every workload."""
    for kind in ("Deployment", "Job"):
        for name, workload in objects(build, kind).items():
            pod = workload["spec"]["template"]["spec"]
            for container in pod["containers"]:
                yield name, pod, container


def worker_deployments(build: str) -> dict[str, dict]:
    """{group: Deployment} of the workers, by their WORKER_GROUP."""
    found = {}
    for name, _, container in containers(build):
        group = env_values(container).get("WORKER_GROUP")
        if group is not None:
            assert group not in found, f"two Deployments run the {group} group"
            found[group] = objects(build, "Deployment")[name]
    return found


def env_values(container: dict) -> dict[str, str]:
    return {item["name"]: item.get("value") for item in container.get("env", [])}


def validate(document: dict) -> None:
    """Kubernetes' own schemas, or KEDA's fields for KEDA's kinds."""
    if document["apiVersion"].startswith("keda.sh/"):
        jsonschema.validate(document, KEDA_SCHEMAS[document["kind"]])
    else:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


# -- Offline validation --------------------------------------------------------------


@pytest.mark.parametrize("build", BUILDS)
def test_every_object_validates_against_the_kubernetes_api_schemas(build):
    kinds = set()
    for document in render(build):
        validate(document)
        kinds.add(document["kind"])
    assert kinds == {
        "ConfigMap",
        "Deployment",
        "Service",
        "Job",
        "PodDisruptionBudget",
        "ScaledObject",
        "TriggerAuthentication",
    }


@pytest.mark.parametrize(
    ("kind", "mutate"),
    [
        ("Deployment", lambda o: o["spec"]["template"]["spec"].update(terminationGracePeriodSeconds="long")),
        ("Deployment", lambda o: o["spec"]["template"]["spec"]["containers"][0].update(livenesProbe={})),
        ("Service", lambda o: o["spec"]["ports"][0].update(port="http")),
        ("ScaledObject", lambda o: o["spec"].update(maxReplicas=3)),
        ("ScaledObject", lambda o: o["spec"].update(minReplicaCount="one")),
        ("ScaledObject", lambda o: o["spec"]["triggers"][0]["metadata"].update(queueLength="20")),
    ],
)
def test_the_validation_refuses_a_broken_object(kind, mutate):
    document = copy.deepcopy(next(o for o in render("base") if o["kind"] == kind))
    mutate(document)
    with pytest.raises((kubernetes_validate.ValidationError, jsonschema.ValidationError)):
        validate(document)


# -- The kit's queues, limits and workers ---------------------------------------------


@pytest.mark.parametrize("build", BUILDS)
def test_every_queue_is_consumed_by_exactly_one_worker_deployment_and_watched_by_its_scaler(build):
    workers = worker_deployments(build)
    assert set(workers) == set(WORKER_GROUPS)
    consumed = [queue for group in workers for queue in WORKER_GROUPS[group]]
    assert sorted(consumed) == sorted(Queue)

    scalers = objects(build, "ScaledObject")
    for group, deployment in workers.items():
        watching = [
            s for s in scalers.values() if s["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
        ]
        assert len(watching) == 1, f"{group}: {len(watching)} ScaledObjects"
        spec = watching[0]["spec"]
        watched = [trigger["metadata"]["queueName"] for trigger in spec["triggers"] if trigger["type"] == "rabbitmq"]
        assert sorted(watched) == sorted(q.value for q in WORKER_GROUPS[group])
        assert 1 <= spec["minReplicaCount"] < spec["maxReplicaCount"]
        assert "replicas" not in deployment["spec"], f"{group}: KEDA owns the replica count"


@pytest.mark.parametrize("build", BUILDS)
def test_the_scalers_read_the_broker_url_from_the_secret(build):
    [authentication] = objects(build, "TriggerAuthentication").values()
    assert authentication["spec"]["secretTargetRef"] == [
        {"parameter": "host", "name": "kit-secrets", "key": "CELERY_BROKER_URL"}
    ]
    for scaler in objects(build, "ScaledObject").values():
        for trigger in scaler["spec"]["triggers"]:
            assert trigger["authenticationRef"]["name"] == authentication["metadata"]["name"]
            assert trigger["metadata"]["mode"] == "QueueLength"


@pytest.mark.parametrize("build", BUILDS)
def test_each_worker_grace_period_covers_its_longest_hard_time_limit_and_sigterm_stays_warm(build):
    for group, deployment in worker_deployments(build).items():
        pod = deployment["spec"]["template"]["spec"]
        longest = max(QUEUE_TIME_LIMITS[queue].hard for queue in WORKER_GROUPS[group])
        assert pod["terminationGracePeriodSeconds"] >= longest + GRACE_MARGIN_SECONDS, group
        [container] = pod["containers"]
        assert "REMAP_SIGTERM" not in env_values(container), "SIGTERM must stay Celery's warm shutdown"
        assert "preStop" not in container.get("lifecycle", {})
        assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    compose = load_compose()
    for group, deployment in worker_deployments(build).items():
        grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert f"{grace}s" == compose[f"worker-{group}"].spec["stop_grace_period"], "compose and Kubernetes agree"


@pytest.mark.parametrize("build", BUILDS)
def test_beat_is_one_replica_replaced_only_after_the_old_one_stopped(build):
    beats = [name for name, _, c in containers(build) if c["command"] == ["/app/compose/start/beat"]]
    assert beats == ["beat"]
    beat = objects(build, "Deployment")["beat"]
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"] == {"type": "Recreate"}
    assert not [s for s in objects(build, "ScaledObject").values() if s["spec"]["scaleTargetRef"]["name"] == "beat"]


def test_migrations_run_as_a_job():
    [job] = objects("base", "Job").values()
    [container] = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["python", "manage.py", "migrate", "--noinput"]


# -- Images, commands and variables that exist ------------------------------------------


@cache
def variables_the_kit_reads() -> set[str]:
    """Names the settings, the commands and the start scripts read from the
    environment (quoted upper-case names in Python, ${NAME} in scripts)."""
    names = set()
    for folder in ("config", "jobs", "ops", "media_tasks", "mail_tasks", "reports"):
        for path in (REPO / folder).rglob("*.py"):
            names |= set(re.findall(r'"([A-Z][A-Z0-9_]{2,})"', path.read_text()))
    for path in (REPO / "compose" / "start").iterdir():
        names |= set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", path.read_text()))
    return names


@pytest.mark.parametrize("build", BUILDS)
def test_images_commands_and_environment_variables_exist_in_the_kit(build):
    compose_image = load_compose()["web"].spec["image"].split(":")[0]
    config_maps = objects(build, "ConfigMap")
    for name, _, container in containers(build):
        assert container["image"].split(":")[0] == compose_image, name
        command = container["command"]
        if command[0].startswith("/app/"):
            script = REPO / Path(command[0]).relative_to("/app")
            assert script.is_file() and os.access(script, os.X_OK), f"{name}: {command[0]}"
        else:
            assert command[:2] == ["python", "manage.py"] and command[2] in get_commands(), f"{name}: {command}"
        for source in container.get("envFrom", []):
            assert source["configMapRef"]["name"] in config_maps
        names = [item["name"] for item in container.get("env", [])]
        names += [
            key
            for source in container.get("envFrom", [])
            for key in config_maps[source["configMapRef"]["name"]]["data"]
        ]
        unknown = set(names) - variables_the_kit_reads()
        assert not unknown, f"{name} sets variables the kit never reads: {unknown}"
    if build == "production":
        assert all(":" in container["image"] for _, _, container in containers(build)), "a released tag"


@pytest.mark.parametrize("build", BUILDS)
def test_secrets_are_referenced_never_written_and_each_container_gets_only_its_own(build):
    assert not [o for o in render(build) if o["kind"] == "Secret"]
    for config_map in objects(build, "ConfigMap").values():
        assert not set(config_map["data"]) & SECRET_VARIABLES
    given = {}
    for name, _, container in containers(build):
        for item in container.get("env", []):
            if item["name"] in SECRET_VARIABLES:
                assert item["valueFrom"]["secretKeyRef"] == {"name": "kit-secrets", "key": item["name"]}
        given[name] = {item["name"] for item in container.get("env", [])} & SECRET_VARIABLES
    app = {"DJANGO_SECRET_KEY", "DATABASE_URL", "CELERY_BROKER_URL"}
    assert given == {
        "web": app | {"METRICS_TOKEN"},
        "worker-general": app,
        "worker-heavy": app,
        "beat": app,
        "flower": {"DJANGO_SECRET_KEY", "CELERY_BROKER_URL", "FLOWER_BASIC_AUTH", "FLOWER_BROKER_API"},
        "kit-migrate": {"DJANGO_SECRET_KEY", "DATABASE_URL"},
    }
    # What each container is given is enough for the production settings.
    for secrets in given.values():
        require_production_secrets({variable: _strong(variable) for variable in secrets})


def _strong(variable: str) -> str:
    secret = "0123456789abcdef" * 4
    if variable.endswith("_URL") or variable == "FLOWER_BROKER_API":
        return f"scheme://user:{secret}@host:1/path"
    return f"operator:{secret}" if variable == "FLOWER_BASIC_AUTH" else secret


# -- Probes and disruption budgets ---------------------------------------------------------


@pytest.mark.parametrize("build", BUILDS)
def test_probes_are_cheap_and_never_ask_the_workers(build):
    for name, _, container in containers(build):
        for probe in (container.get(kind) for kind in ("readinessProbe", "livenessProbe", "startupProbe")):
            if probe is None:
                continue
            if "httpGet" in probe:
                assert probe["httpGet"]["path"] in ("/healthz", "/healthcheck"), name
            elif "exec" in probe:
                command = " ".join(probe["exec"]["command"])
                assert "celery" not in command and "python" not in command, f"{name}: {command}"
                assert f"${LIVENESS_ENV}" in command and LIVENESS_ENV in env_values(container), name
            else:
                assert set(probe) & {"tcpSocket"}, name
    for group, deployment in worker_deployments(build).items():
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        assert "livenessProbe" in container, group


@pytest.mark.parametrize("build", BUILDS)
def test_web_and_every_worker_group_have_a_disruption_budget_and_resources(build):
    budgets = objects(build, "PodDisruptionBudget").values()
    covered = {b["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] for b in budgets}
    workers = {d["metadata"]["name"] for d in worker_deployments(build).values()}
    assert covered == {"web"} | workers
    for name, _, container in containers(build):
        resources = container["resources"]
        assert resources["requests"]["cpu"] and resources["requests"]["memory"], name
        assert resources["limits"]["memory"], name


def test_the_worker_liveness_checks_of_kubernetes_and_compose_pass_on_a_fresh_file_and_fail_on_a_stale_one(tmp_path):
    [deployment, *_] = worker_deployments("base").values()
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    kubernetes_probe = container["livenessProbe"]["exec"]["command"]
    compose_check = load_compose()["worker-general"].spec["healthcheck"]["test"]
    assert compose_check[0] == "CMD-SHELL"
    alive = tmp_path / "alive"
    env = {"PATH": os.environ["PATH"], LIVENESS_ENV: str(alive)}

    def passes(command: list[str]) -> bool:
        return subprocess.run(command, env=env, capture_output=True).returncode == 0

    for command in (kubernetes_probe, ["sh", "-c", compose_check[1]]):
        alive.touch()
        assert passes(command), command
        stale = alive.stat().st_mtime - 120
        os.utime(alive, (stale, stale))
        assert not passes(command), command
        alive.unlink()
        assert not passes(command), command
