"""The alert rules (compose/prometheus/alerts.yml) checked and unit-tested
by Prometheus's own promtool (Debian's `prometheus` package; `make
system-packages` installs it), wired into compose's Prometheus and
Alertmanager, and each documented with a runbook line."""

import re
import shutil
import subprocess
import urllib.request
from pathlib import Path, PurePosixPath

import pytest
import yaml

from tests.helpers import REPO, wait_for
from tests.ops.compose_model import COMPOSE_DIR, load

RULES = COMPOSE_DIR / "prometheus" / "alerts.yml"
RULE_TESTS = REPO / "tests" / "ops" / "promtool" / "alerts_test.yml"
PROMETHEUS_CONF = COMPOSE_DIR / "prometheus" / "prometheus.yml"
ALERTMANAGER_CONF = COMPOSE_DIR / "alertmanager" / "alertmanager.yml"


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is missing: apt-get install -y --no-install-recommends prometheus (make system-packages)")
    return path


def alert_rules(rules_path: Path = RULES) -> list[dict]:
    groups = yaml.safe_load(rules_path.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def run_rule_tests(rules: dict, tmp_path: Path) -> subprocess.CompletedProcess:
    """promtool test rules on the unit tests, against `rules` (a parsed
    rules file) written where the tests look for it."""
    rules_path = tmp_path / "alerts.yml"
    rules_path.write_text(yaml.safe_dump(rules, sort_keys=False))
    tests = yaml.safe_load(RULE_TESTS.read_text())
    tests["rule_files"] = [str(rules_path)]
    tests_path = tmp_path / "alerts_test.yml"
    tests_path.write_text(yaml.safe_dump(tests, sort_keys=False))
    return subprocess.run([promtool(), "test", "rules", str(tests_path)], capture_output=True, text=True, timeout=120)


def test_promtool_accepts_the_rules():
    result = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_every_rule_passes_its_unit_tests():
    result = subprocess.run(
        [promtool(), "test", "rules", RULE_TESTS.name],
        cwd=RULE_TESTS.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_rule_is_tested_firing_and_quiet():
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    cases = [case for test in tests for case in test.get("alert_rule_test", [])]
    for rule in alert_rules():
        name = rule["alert"]
        assert any(case["alertname"] == name and case["exp_alerts"] for case in cases), f"{name} never fires"
        assert any(case["alertname"] == name and not case["exp_alerts"] for case in cases), f"{name} never stays quiet"


@pytest.mark.parametrize("removed", [rule["alert"] for rule in alert_rules()])
def test_the_unit_tests_fail_without_each_rule(removed, tmp_path):
    """The unit tests catch a rule that is gone: they assert what fires, not
    only that promtool runs."""
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        group["rules"] = [rule for rule in group["rules"] if rule.get("alert") != removed]

    result = run_rule_tests(rules, tmp_path)

    assert result.returncode != 0
    assert removed in result.stdout + result.stderr


def test_the_thresholds_the_rules_compare_with_are_the_settings_the_kit_exports(settings):
    asked = {match for rule in alert_rules() for match in re.findall(r'threshold="(\w+)"', rule["expr"])}
    assert asked == set(settings.OPS_ALERT_THRESHOLDS)


def test_compose_prometheus_loads_the_rules_and_alerts_the_alertmanager_service():
    config = yaml.safe_load(PROMETHEUS_CONF.read_text())
    prometheus = load()["prometheus"]
    for rule_file in config["rule_files"]:
        assert prometheus.bind_mounts[PurePosixPath(rule_file)] == RULES.resolve()
    targets = [
        t for manager in config["alerting"]["alertmanagers"] for s in manager["static_configs"] for t in s["targets"]
    ]
    assert targets == ["alertmanager:9093"]
    alertmanager = load()["alertmanager"]
    mounted_at = {host: container for container, host in alertmanager.bind_mounts.items()}
    assert f"--config.file={mounted_at[ALERTMANAGER_CONF.resolve()]}" in alertmanager.spec["command"]


def test_amtool_accepts_the_alertmanager_configuration():
    amtool = shutil.which("amtool")
    if amtool is None:
        pytest.fail("amtool is missing: apt-get install -y --no-install-recommends prometheus-alertmanager")
    result = subprocess.run([amtool, "check-config", str(ALERTMANAGER_CONF)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_runbook_line_in_the_readme():
    readme = (REPO / "README.md").read_text()
    for rule in alert_rules():
        assert re.search(rf"^\| `{rule['alert']}` \|.+\|.+\|$", readme, re.MULTILINE), (
            f"{rule['alert']}: no runbook line"
        )


def metric_names_in_rules(prefix: str) -> set[str]:
    return {name for rule in alert_rules() for name in re.findall(rf"\b{prefix}[a-z_]+", rule["expr"])}


@pytest.mark.django_db
def test_the_rules_ask_only_for_kit_metrics_the_kit_exports(monkeypatch):
    from ops import broker, metrics

    monkeypatch.setattr(broker, "queue_depths", lambda: {})
    monkeypatch.setattr(broker, "workers_online", lambda: [])
    monkeypatch.setattr(broker, "dead_letter_messages", lambda: 0)
    monkeypatch.setattr(broker, "workers_resources", lambda: [])
    exported = set()
    for family in metrics.registry().collect():
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}.get(family.type, ("",))
        exported |= {family.name + suffix for suffix in suffixes}
    asked = metric_names_in_rules("kit_")
    assert asked and asked <= exported, asked - exported


@pytest.mark.integration
def test_the_rules_ask_only_for_rabbitmq_metrics_rabbitmq_exports(real_services):
    """RabbitMQ's own Prometheus endpoint (the rabbitmq_prometheus plugin,
    which compose's image enables), here on the local node."""

    def exported() -> set[str]:
        try:
            with urllib.request.urlopen("http://127.0.0.1:15692/metrics", timeout=5) as response:
                text = response.read().decode()
        except OSError:
            return set()
        return {line.split()[0].split("{")[0] for line in text.splitlines() if line and not line.startswith("#")}

    if not exported():  # the plugin's CLI takes seconds: only when it is off
        plugins = shutil.which("rabbitmq-plugins") or "/usr/sbin/rabbitmq-plugins"
        enabled = subprocess.run([plugins, "-q", "enable", "rabbitmq_prometheus"], capture_output=True, text=True)
        assert enabled.returncode == 0, enabled.stderr
    names = wait_for(exported, timeout=30, what="RabbitMQ's Prometheus endpoint on 15692")
    asked = metric_names_in_rules("rabbitmq_")
    assert asked and asked <= names, asked - names
