"""The alert rules evaluated end to end by a real Prometheus (Debian's
`prometheus`, on a loopback port of this test's own) that scrapes the
kit's /metrics from a running web process (gunicorn, as compose runs it),
with a real worker on RabbitMQ: stopping the worker fires "no worker
online" and "queue without consumers"; starting it again resolves them.

The rules are compose/prometheus/alerts.yml, unchanged but for their
`for:` durations, shortened (with the scrape and evaluation intervals) so
the test takes seconds rather than minutes.
"""

import json
import shutil
import subprocess
import sys
import urllib.request

import pytest
import yaml

from jobs.models import JobStatus
from jobs.services import enqueue
from tests.helpers import REPO, free_port, wait_for
from tests.ops.test_alert_rules import RULES, promtool

pytestmark = pytest.mark.integration

METRICS_TOKEN = "prometheus-end-to-end-token"


class Server:
    """A server process of the test's own, on a free loopback port."""

    def __init__(self, command: list[str], *, port: int, env: dict | None, log_path, ready_path: str):
        self.command = command
        self.port = port
        self.env = env
        self.log_path = log_path
        self.ready_url = f"http://127.0.0.1:{port}{ready_path}"

    def start(self) -> "Server":
        self.log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            self.command, cwd=REPO, env=self.env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )
        wait_for(self._ready, timeout=60, interval=0.25, what=f"{self.command[0]} on {self.port} ({self.log_path})")
        return self

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"{self.command} exited:\n{self.log_path.read_text(errors='replace')}")
        try:
            with urllib.request.urlopen(self.ready_url, timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


@pytest.fixture
def web(worker_env, tmp_path):
    """The web app under gunicorn, answering broker and worker questions
    afresh on almost every scrape (short caches, a short broadcast)."""
    port = free_port()
    env = {
        **worker_env,
        "METRICS_TOKEN": METRICS_TOKEN,
        "OPS_WORKERS_CACHE_SECONDS": "1",
        "OPS_BROKER_CACHE_SECONDS": "1",
        "OPS_INSPECT_TIMEOUT_MS": "300",
    }
    command = [sys.executable, "-m", "gunicorn", "config.wsgi:application", "--bind", f"127.0.0.1:{port}"]
    server = Server(command, port=port, env=env, log_path=tmp_path / "web.log", ready_path="/healthz").start()
    yield server
    server.stop()


@pytest.fixture
def prometheus(web, tmp_path):
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail(
            "prometheus is missing: apt-get install -y --no-install-recommends prometheus (make system-packages)"
        )
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = "2s"
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(rules, sort_keys=False))
    (tmp_path / "token").write_text(METRICS_TOKEN)
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(tmp_path / "alerts.yml")],
        "scrape_configs": [
            {
                "job_name": "kit",
                "metrics_path": "/metrics",
                "authorization": {"type": "Bearer", "credentials_file": str(tmp_path / "token")},
                "static_configs": [{"targets": [f"127.0.0.1:{web.port}"]}],
            }
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    check = subprocess.run([promtool(), "check", "config", str(tmp_path / "prometheus.yml")], capture_output=True)
    assert check.returncode == 0, check.stdout + check.stderr
    port = free_port()
    command = [
        binary,
        f"--config.file={tmp_path / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    server = Server(command, port=port, env=None, log_path=tmp_path / "prometheus.log", ready_path="/-/ready").start()
    yield server
    server.stop()


def firing(prometheus: Server) -> set[tuple[str, str]]:
    """(alert name, queue) of the alerts Prometheus says are firing now."""
    url = f"http://127.0.0.1:{prometheus.port}/api/v1/alerts"
    with urllib.request.urlopen(url, timeout=5) as response:
        alerts = json.load(response)["data"]["alerts"]
    return {(a["labels"]["alertname"], a["labels"].get("queue", "")) for a in alerts if a["state"] == "firing"}


def scraped_up(prometheus: Server) -> bool:
    url = f"http://127.0.0.1:{prometheus.port}/api/v1/query?query=up%7Bjob%3D%22kit%22%7D"
    with urllib.request.urlopen(url, timeout=5) as response:
        results = json.load(response)["data"]["result"]
    return bool(results) and results[0]["value"][1] == "1"


def test_stopping_the_only_worker_fires_no_worker_and_no_consumer_alerts_and_starting_one_resolves_them(
    start_worker, prometheus
):
    outage = {("KitNoWorkerOnline", ""), ("KitQueueWithoutConsumers", "default")}
    worker = start_worker(queues="default")
    wait_for(lambda: scraped_up(prometheus), timeout=30, what="Prometheus to scrape the kit")
    wait_for(lambda: not firing(prometheus) & outage, timeout=30, what="a quiet start")
    assert not firing(prometheus) & outage

    worker.stop()
    job = enqueue("jobs.noop")  # waits on `default`, which nobody consumes now
    job.refresh_from_db()
    assert job.status == JobStatus.QUEUED

    wait_for(lambda: outage <= firing(prometheus), timeout=60, interval=0.5, what=f"{outage} to fire")
    assert ("KitBrokerUnreachable", "") not in firing(prometheus)

    start_worker(queues="default")

    wait_for(lambda: not firing(prometheus) & outage, timeout=60, interval=0.5, what=f"{outage} to resolve")
    wait_for(
        lambda: (job.refresh_from_db(), job.status)[1] == JobStatus.SUCCESS, timeout=30, what="the waiting job to run"
    )
