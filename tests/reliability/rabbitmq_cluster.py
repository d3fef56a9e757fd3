"""A three-node RabbitMQ cluster of the suite's own, on loopback.

Like the suite's second node (tests/reliability/conftest.py): node names with
this process's pid in them (kitq<pid>a@localhost, ...), free ports, their own
data and log folders under a temporary folder the rabbitmq user can enter,
no plugins. The three nodes boot in parallel; the second and third then join
the first with `rabbitmqctl join_cluster`. A node can be SIGKILLed (the
Erlang VM, as a crashed host) and started again, when it rejoins by itself
(its data folder remembers the cluster). Everything is stopped and removed
at the end of the session.
"""

import os
import shutil
import signal
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest

from jobs.queues import Priority, Queue, QueueType, dead_letter_queue, lane_name, task_queues
from tests.helpers import drop_publishing_pools, free_port, wait_for

RABBITMQCTL = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
RABBITMQ_SERVER = shutil.which("rabbitmq-server") or "/usr/sbin/rabbitmq-server"
RABBITMQ_QUEUES = shutil.which("rabbitmq-queues") or "/usr/sbin/rabbitmq-queues"


class ClusterNode:
    def __init__(self, name: str, base: Path):
        self.name = name
        self.port = free_port()
        self.dist_port = free_port()
        self.base = base
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def ctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(
            [RABBITMQCTL, "-q", "-n", self.name, *args], capture_output=True, text=True, timeout=timeout
        )

    def _prepare(self) -> None:
        for folder in ("mnesia", "log"):
            (self.base / folder).mkdir(parents=True, exist_ok=True)
        (self.base / "enabled_plugins").write_text("[].\n")
        (self.base / "rabbitmq.conf").write_text(
            f"listeners.tcp.local = 127.0.0.1:{self.port}\n"
            "loopback_users.guest = true\n"
            # A node of three on a 2-core machine shared with other runs:
            # no need to reserve memory or disk for production loads.
            "disk_free_limit.absolute = 50MB\n"
        )
        for path in [self.base, *self.base.rglob("*")]:
            os.chmod(path, 0o777 if path.is_dir() else 0o666)

    def env(self) -> dict:
        return {
            **os.environ,
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.base / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(self.base / "rabbitmq.conf"),
        }

    def start(self) -> None:
        """Boot the node (returns once it runs, see await_startup)."""
        self._prepare()
        started = subprocess.run(
            [RABBITMQ_SERVER, "-detached"], env=self.env(), capture_output=True, text=True, timeout=60
        )
        assert started.returncode == 0, started.stderr

    def await_startup(self, timeout: float = 120) -> None:
        # await_startup fails at once until the node has registered with epmd.
        wait_for(
            lambda: self.ctl("await_startup", "--timeout", "60", timeout=90).returncode == 0,
            timeout=timeout,
            interval=1,
            what=f"RabbitMQ node {self.name} to boot (logs: {self.base / 'log'})",
        )
        self.pid = self.os_pid()

    def os_pid(self) -> int:
        done = self.ctl("eval", "os:getpid().")
        assert done.returncode == 0, done.stderr
        return int(done.stdout.strip().strip('"'))

    def kill(self) -> None:
        """SIGKILL the node's Erlang VM, as a crashed host: no goodbye to the
        other nodes, no connection closed cleanly. (Its pid is read when it
        has booted: asking a node under load takes seconds.)"""
        pid = self.pid
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not Path(f"/proc/{pid}").exists(), timeout=30, what=f"node {self.name} to die")

    def stop(self) -> None:
        self.ctl("stop", timeout=60)


class RabbitCluster:
    def __init__(self, nodes: list[ClusterNode]):
        self.nodes = nodes

    @property
    def failover_url(self) -> str:
        """Every node, for kombu's failover (it tries them in turn)."""
        return ";".join(node.url for node in self.nodes)

    def node(self, name: str) -> ClusterNode:
        return next(node for node in self.nodes if node.name == name)

    def running_nodes(self, via: ClusterNode) -> set[str]:
        done = via.ctl("eval", "rabbit_nodes:all_running().")
        assert done.returncode == 0, done.stderr
        return {node.name for node in self.nodes if node.name in done.stdout}

    def queue_leaders(self, via: ClusterNode) -> dict[str, str]:
        """{queue name: name of the node that leads it} for quorum queues."""
        done = via.ctl("list_queues", "name", "leader", "--no-table-headers")
        assert done.returncode == 0, done.stderr
        leaders = {}
        for line in done.stdout.splitlines():
            name, _, leader = line.partition("\t")
            if leader.strip():
                leaders[name] = leader.strip()
        return leaders

    def queue_members_online(self, queue: str, via: ClusterNode) -> int:
        done = via.ctl("list_queues", "name", "online", "--no-table-headers")
        assert done.returncode == 0, done.stderr
        for line in done.stdout.splitlines():
            name, _, online = line.partition("\t")
            if name == queue:
                return online.count("@")
        return 0

    def queue_consumers(self, queue: str, via: ClusterNode) -> int:
        done = via.ctl("list_queues", "name", "consumers", "--no-table-headers")
        assert done.returncode == 0, done.stderr
        for line in done.stdout.splitlines():
            name, _, consumers = line.partition("\t")
            if name == queue:
                return int(consumers.strip() or 0)
        return 0

    def form(self) -> None:
        first, *others = self.nodes
        for node in others:
            for step in (("stop_app",), ("join_cluster", first.name), ("start_app",)):
                done = node.ctl(*step, timeout=120)
                assert done.returncode == 0, f"{node.name} {step}: {done.stderr}"
        wait_for(
            lambda: self.running_nodes(first) == {node.name for node in self.nodes},
            timeout=60,
            interval=0.5,
            what="all three nodes to run in one cluster",
        )


@contextmanager
def running_cluster(prefix: str = "kitq"):
    """Three fresh nodes in one cluster for as long as the block runs
    (also used by `make bench`, bench/throughput.py)."""
    # Outside pytest's own temporary folders, which only root may enter: the
    # Debian wrapper runs the server as the rabbitmq user.
    base = Path(tempfile.mkdtemp(prefix="kitcluster-"))
    os.chmod(base, 0o777)
    pid = os.getpid()
    nodes = [ClusterNode(f"{prefix}{pid}{letter}@localhost", base / letter) for letter in "abc"]
    cluster = RabbitCluster(nodes)
    began = time.monotonic()
    try:
        with ThreadPoolExecutor(len(nodes)) as pool:
            list(pool.map(ClusterNode.start, nodes))
            list(pool.map(ClusterNode.await_startup, nodes))
        cluster.form()
        print(f"three-node RabbitMQ cluster up in {time.monotonic() - began:.1f}s", flush=True)
        yield cluster
    finally:
        with ThreadPoolExecutor(len(nodes)) as pool:
            list(pool.map(ClusterNode.stop, nodes))
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def rabbit_cluster(real_services):
    with running_cluster() as cluster:
        yield cluster


def _quorum_conf() -> dict:
    """The Celery settings config/settings/base.py derives for
    KIT_QUEUE_TYPE=quorum, for the test process (its settings were loaded in
    classic mode; worker processes get KIT_QUEUE_TYPE from their environment)."""
    queues = task_queues(QueueType.QUORUM)
    default = next(
        queue for queue in queues if queue.name == lane_name(Queue.DEFAULT, Priority.MEDIUM, QueueType.QUORUM)
    )
    return {
        "task_queues": queues,
        "task_default_queue": default.name,
        "task_default_exchange": default.exchange.name,
        "task_default_exchange_type": default.exchange.type,
        "task_default_routing_key": default.routing_key,
        "task_queue_max_priority": None,
    }


def _forget_routing(app) -> None:
    """Celery caches the queues, the router and the default exchange built
    from its settings on first use."""
    for name in ("queues", "default_queue", "router", "default_exchange"):
        app.amqp.__dict__.pop(name, None)


@contextmanager
def quorum_mode(broker_url: str, worker_env: dict):
    """The test process publishes in quorum mode to `broker_url` (kombu's
    failover list), and workers it starts with `worker_env` consume there."""
    from celery import current_app
    from django.conf import settings

    saved_url = os.environ.get("CELERY_BROKER_URL")
    saved_conf = {key: current_app.conf[key] for key in _quorum_conf()}
    saved_type = settings.KIT_QUEUE_TYPE
    os.environ["CELERY_BROKER_URL"] = broker_url
    worker_env.update(CELERY_BROKER_URL=broker_url, KIT_QUEUE_TYPE=QueueType.QUORUM.value)
    settings.KIT_QUEUE_TYPE = QueueType.QUORUM
    current_app.conf.update(_quorum_conf())
    _forget_routing(current_app)
    drop_publishing_pools()
    try:
        # Every lane declared and emptied, as the `broker` fixture does for
        # classic queues: each test starts on an empty broker.
        with current_app.connection_for_write() as connection:
            channel = connection.default_channel
            for queue in [*current_app.conf.task_queues, dead_letter_queue(QueueType.QUORUM)]:
                queue(channel).declare()
                queue(channel).purge()
        yield
    finally:
        if saved_url is None:
            os.environ.pop("CELERY_BROKER_URL", None)
        else:
            os.environ["CELERY_BROKER_URL"] = saved_url
        settings.KIT_QUEUE_TYPE = saved_type
        current_app.conf.update(saved_conf)
        _forget_routing(current_app)
        drop_publishing_pools()


@pytest.fixture
def on_quorum_cluster(rabbit_cluster, broker, worker_env):
    """The whole cluster running, the test process and its workers in quorum
    mode on it. (`broker` first: the classic vhost fixture, so a failure
    here leaves the rest of the suite's broker state as it expects.)"""
    for node in rabbit_cluster.nodes:
        # A node a previous test killed is running again.
        assert node.ctl("await_startup", "--timeout", "5").returncode == 0, f"{node.name} is down"
    with quorum_mode(rabbit_cluster.failover_url, worker_env):
        yield rabbit_cluster
