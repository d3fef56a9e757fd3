"""compose/docker-compose.yml read as docker compose reads it, for tests
that check it without a Docker engine: variables interpolated from
compose/.env.example, YAML anchors and merges resolved, container paths
mapped back to files in the repository."""

import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path, PurePosixPath

import yaml

from tests.helpers import REPO

COMPOSE_DIR = REPO / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
ENV_EXAMPLE = COMPOSE_DIR / ".env.example"
# Where the Dockerfile copies the repository.
APP_ROOT = PurePosixPath("/app")

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}; $$ is a literal $.
_REFERENCE = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def read_env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


@cache
def _filled_in_env() -> tuple[tuple[str, str], ...]:
    env = read_env_file(ENV_EXAMPLE)
    for name, value in env.items():
        if "change-me" in value:
            user, separator, _ = value.rpartition(":")  # FLOWER_BASIC_AUTH is user:password
            env[name] = f"{user}{separator}{secrets.token_hex(32)}"
    return tuple(env.items())


def filled_in_env() -> dict[str, str]:
    """compose/.env.example as an operator fills it in: every change-me
    replaced by a random secret (the same ones for the whole test run)."""
    return dict(_filled_in_env())


def referenced_variables(text: str) -> set[str]:
    return {match["name"] for match in _REFERENCE.finditer(text) if match["name"]}


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's interpolation; a missing mandatory variable raises KeyError."""

    def replace(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$$"  # left for the container's shell, as compose does (un-escaped below)
        name, op, arg = match["name"], match["op"], match["arg"]
        value = env.get(name)
        if op in (":-", ":?") and value == "":
            value = None
        if value is not None:
            return value
        if op and op.endswith("?"):
            raise KeyError(f"{name}: {arg}")
        return arg if op else ""

    return _REFERENCE.sub(replace, text).replace("$$", "$")


@dataclass
class Service:
    name: str
    spec: dict

    @property
    def environment(self) -> dict[str, str]:
        env = self.spec.get("environment") or {}
        return {key: str(value) for key, value in env.items()}

    @property
    def argv(self) -> list[str]:
        """What the container runs: its entrypoint, or else its command."""
        return list(self.spec.get("entrypoint") or self.spec.get("command") or [])

    @property
    def bind_mounts(self) -> dict[PurePosixPath, Path]:
        """{container path: host path} of the files and folders mounted in."""
        mounts = {}
        for volume in self.spec.get("volumes") or []:
            source, target = volume.split(":")[:2]
            if source.startswith("."):
                mounts[PurePosixPath(target)] = (COMPOSE_DIR / source).resolve()
        return mounts

    @property
    def uses_app_image(self) -> bool:
        return "build" in self.spec

    def host_path(self, container_path: str) -> Path | None:
        """The repository file behind a path inside this container."""
        path = PurePosixPath(container_path)
        for target, source in self.bind_mounts.items():
            if path == target or target in path.parents:
                return source / path.relative_to(target)
        if self.uses_app_image and APP_ROOT in path.parents:
            return REPO / path.relative_to(APP_ROOT)
        return None

    @property
    def published_ports(self) -> list[tuple[int, int]]:
        """(host port, container port) pairs."""
        pairs = []
        for entry in self.spec.get("ports") or []:
            host, container = str(entry).rsplit(":", 2)[-2:]
            pairs.append((int(host), int(container)))
        return pairs

    @property
    def memory_limit_mib(self) -> int | None:
        limit = (((self.spec.get("deploy") or {}).get("resources") or {}).get("limits") or {}).get("memory")
        if limit is None:
            return None
        number, unit = re.fullmatch(r"(\d+)([MG])", str(limit)).groups()
        return int(number) * (1024 if unit == "G" else 1)


def document(env: dict[str, str] | None = None) -> dict:
    env = read_env_file(ENV_EXAMPLE) if env is None else env
    return yaml.safe_load(interpolate(COMPOSE_FILE.read_text(), env))


def load(env: dict[str, str] | None = None) -> dict[str, Service]:
    return {name: Service(name, spec) for name, spec in document(env)["services"].items()}


def seconds(duration: str) -> int:
    """A compose duration such as 210s, 3m or 1h30m, in seconds."""
    units = {"h": 3600, "m": 60, "s": 1}
    parts = re.findall(r"(\d+)([hms])", duration)
    assert "".join(f"{n}{u}" for n, u in parts) == duration, f"unsupported duration {duration!r}"
    return sum(int(n) * units[u] for n, u in parts)


RABBITMQCTL = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"


@contextmanager
def definitions_imported(path: Path, *, prefix: str) -> Iterator[str]:
    """A fresh vhost on the machine's RabbitMQ holding what the definitions
    file at `path` declares (guest may use it); yields its name and deletes
    it afterwards."""
    vhost = f"{prefix}-{uuid.uuid4().hex[:6]}"
    definitions = json.loads(path.read_text())
    for kind in ("exchanges", "queues", "bindings", "policies"):
        for item in definitions[kind]:
            item["vhost"] = vhost
    definitions["vhosts"] = [{"name": vhost}]
    definitions["permissions"] = [{"user": "guest", "vhost": vhost, "configure": ".*", "write": ".*", "read": ".*"}]
    try:
        # rabbitmqctl runs as the rabbitmq user, who cannot read a test's
        # tmp_path (and 3.10 cannot read definitions from stdin): a readable
        # file in /tmp, holding no secret.
        with tempfile.NamedTemporaryFile("w", suffix=".json", dir="/tmp") as file:
            json.dump(definitions, file)
            file.flush()
            os.chmod(file.name, 0o644)
            imported = subprocess.run(
                [RABBITMQCTL, "-q", "import_definitions", file.name], capture_output=True, text=True
            )
        assert imported.returncode == 0, imported.stderr
        yield vhost
    finally:
        subprocess.run([RABBITMQCTL, "-q", "delete_vhost", vhost], capture_output=True)
