"""The shared rate limit, in one process and across several, on PostgreSQL
and on SQLite (the embedded default)."""

import json
import os
import subprocess
import sys
import time

import pytest

from mail_tasks.models import RateBucket
from mail_tasks.ratelimit import GLOBAL_KEY, limits_for, try_acquire
from tests import helpers

RATE = 20


@pytest.mark.django_db
def test_a_slot_is_taken_from_every_limit_or_from_none(settings):
    settings.MAIL_RATE_PER_SECOND = 1
    settings.MAIL_RATE_PER_DOMAIN_PER_SECOND = 1
    one, two = limits_for("one.example"), limits_for("two.example")
    assert one == {GLOBAL_KEY: 1.0, "domain:one.example": 1.0}

    assert try_acquire(one) == 0
    wait = try_acquire(two)  # the global limit is used up for a second

    assert 0 < wait <= 1
    assert RateBucket.objects.get(key="domain:two.example").tat == 0  # not taken either


@pytest.mark.django_db
def test_no_limit_set_means_no_bucket_at_all(settings):
    settings.MAIL_RATE_PER_SECOND = 0
    settings.MAIL_RATE_PER_DOMAIN_PER_SECOND = 0
    assert limits_for("example.com") == {}


def _probe(env: dict, count: int, start_at: float, out) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.mail_tasks.ratelimit_probe", str(count), str(start_at), str(out)],
        cwd=helpers.REPO,
        env=env,
    )


def _max_in_window(stamps: list[float], window: float) -> int:
    return max(sum(1 for t in stamps[i:] if t - start < window) for i, start in enumerate(stamps))


@pytest.fixture(params=["postgresql", "sqlite"])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test", "DATABASE_URL": url}
        subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=helpers.REPO, env=env, check=True)
        return url
    request.getfixturevalue("transactional_db")  # the probes only see committed rows
    return helpers.test_database_url()


def test_three_processes_share_one_limit(database_url, tmp_path):
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "DATABASE_URL": database_url,
        "MAIL_RATE_PER_SECOND": str(RATE),
    }
    start_at = time.time() + 4  # after every probe has set Django up
    probes = [_probe(env, 10, start_at, tmp_path / f"stamps-{n}.json") for n in range(3)]
    for probe in probes:
        assert probe.wait(timeout=60) == 0

    stamps = sorted(t for n in range(3) for t in json.loads((tmp_path / f"stamps-{n}.json").read_text()))
    assert len(stamps) == 30
    # 30 slots at 20 a second, one at a time: at least 1.45 s. Three
    # separate limits would grant them in about 0.5 s.
    assert stamps[-1] - stamps[0] >= 29 / RATE - 0.1
    assert _max_in_window(stamps, 0.5) <= RATE * 0.5 + 2
