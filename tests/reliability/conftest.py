"""A RabbitMQ node of the suite's own, for faults that take the broker down.

Other test runs share the machine's RabbitMQ (port 5672), so it is never
stopped here: the broker-restart tests start a second node of their own,
kitfault<pid>@localhost on a free loopback port (two runs at once do not
meet), with its own data and log folders and no plugins (so no management
port to clash), stop and start *its* app, and stop it at the end of the
session. A node that cannot start fails the tests that need it.
"""

import os
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.helpers import drop_publishing_pools, free_port, wait_for
from tests.reliability.postgres_node import fault_postgres  # noqa: F401
from tests.reliability.rabbitmq_cluster import on_quorum_cluster, rabbit_cluster  # noqa: F401

NODE = f"kitfault{os.getpid()}@localhost"
PORT = free_port()
FAULT_BROKER_URL = f"amqp://guest:guest@127.0.0.1:{PORT}//"
RABBITMQCTL = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
RABBITMQ_SERVER = shutil.which("rabbitmq-server") or "/usr/sbin/rabbitmq-server"


def rabbitmqctl(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([RABBITMQCTL, "-q", "-n", NODE, *args], capture_output=True, text=True, timeout=timeout)


class FaultBroker:
    url = FAULT_BROKER_URL

    def stop_app(self) -> None:
        done = rabbitmqctl("stop_app")
        assert done.returncode == 0, done.stderr

    def start_app(self) -> None:
        done = rabbitmqctl("start_app")
        assert done.returncode == 0, done.stderr
        done = rabbitmqctl("await_startup", "--timeout", "60")
        assert done.returncode == 0, done.stderr

    @contextmanager
    def rabbit_env(self, **values: int):
        """The running node's `rabbit` application settings (what
        advanced.config sets) changed for a while, then put back. A channel
        reads consumer_timeout when it opens: change it before the worker
        connects."""
        saved = {}
        for name, value in values.items():
            # The old value comes back as an Erlang term: {ok,V} or undefined.
            done = rabbitmqctl(
                "eval",
                f"Old = application:get_env(rabbit, {name}), "
                f"ok = application:set_env(rabbit, {name}, {int(value)}), Old.",
            )
            assert done.returncode == 0, done.stderr
            saved[name] = done.stdout.strip()
        try:
            yield
        finally:
            for name, old in saved.items():
                done = rabbitmqctl(
                    "eval",
                    f"case {old} of {{ok, V}} -> application:set_env(rabbit, {name}, V); "
                    f"undefined -> application:unset_env(rabbit, {name}) end.",
                )
                assert done.returncode == 0, done.stderr


@pytest.fixture(scope="session")
def fault_broker(real_services):
    # Outside pytest's own temporary folders, which only root may enter: the
    # Debian wrapper runs the server as the rabbitmq user.
    base = Path(tempfile.mkdtemp(prefix="kitfault-"))
    for folder in ("mnesia", "log"):
        (base / folder).mkdir()
    (base / "enabled_plugins").write_text("[].\n")
    (base / "rabbitmq.conf").write_text(f"listeners.tcp.local = 127.0.0.1:{PORT}\nloopback_users.guest = true\n")
    for path in [base, *base.rglob("*")]:
        os.chmod(path, 0o777 if path.is_dir() else 0o666)
    env = {
        **os.environ,
        "RABBITMQ_NODENAME": NODE,
        "RABBITMQ_NODE_PORT": str(PORT),
        "RABBITMQ_DIST_PORT": str(free_port()),
        "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
        "RABBITMQ_LOG_BASE": str(base / "log"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
        "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
    }
    started = subprocess.run([RABBITMQ_SERVER, "-detached"], env=env, capture_output=True, text=True, timeout=60)
    assert started.returncode == 0, started.stderr

    try:
        # await_startup fails at once until the node has registered with epmd.
        wait_for(
            lambda: rabbitmqctl("await_startup", "--timeout", "60").returncode == 0,
            timeout=90,
            interval=1,
            what=f"RabbitMQ node {NODE} to boot (logs: {base / 'log'})",
        )
        yield FaultBroker()
    finally:
        rabbitmqctl("stop", timeout=60)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def on_fault_broker(fault_broker, worker_env):
    """The test process and the workers it starts use the suite's own node.
    Celery reads CELERY_BROKER_URL from the environment before its settings."""
    saved = os.environ.get("CELERY_BROKER_URL")
    os.environ["CELERY_BROKER_URL"] = fault_broker.url
    worker_env["CELERY_BROKER_URL"] = fault_broker.url
    drop_publishing_pools()
    try:
        yield fault_broker
    finally:
        if saved is None:
            os.environ.pop("CELERY_BROKER_URL", None)
        else:
            os.environ["CELERY_BROKER_URL"] = saved
        drop_publishing_pools()
