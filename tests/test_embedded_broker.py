"""The embedded default's broker (jobs/filesystem_broker.py) keeps the
promises the kit makes on RabbitMQ: priorities, no message lost or run twice
with several producers and consumers in separate processes, and the job of a
worker killed mid-task delivered again. Real programs on SQLite and the
filesystem broker in a fresh var directory, as a first run has them."""

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.filesystem_broker import LOCK_NAME, message_name, orphans_requeue
from tests.embedded_stack import Up, admin_token, first_run_env, http, jobs_rows, sqlite_id
from tests.helpers import REPO, free_port, wait_for

pytestmark = pytest.mark.integration

FINISHED = ("SUCCESS", "FAILURE", "DEAD", "LOST", "REVOKED")


@pytest.fixture
def first_run(tmp_path):
    yield from first_run_env(tmp_path)


class Program:
    """One `manage.py` program in a session of its own, its output in a file."""

    def __init__(self, env: dict, log_path: Path, *argv: str):
        self.log_path = log_path
        self.log = open(log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", *argv],
            cwd=REPO,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL to the program and everything it started (a pool)."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(10)
        self.log.close()


def worker(env: dict, tmp_path: Path, name: str, concurrency: int) -> Program:
    program = Program(
        env,
        tmp_path / f"{name}.log",
        "worker",
        "--queues",
        "default",
        "--concurrency",
        str(concurrency),
        "--hostname",
        f"{name}@%h",
        "--no-autoreload",
    )
    wait_for(lambda: " ready." in program.output(), timeout=60, interval=0.2, what=f"{name} to be ready")
    return program


def manage(env: dict, *argv: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *argv], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def status_counts(var_dir: Path) -> dict[str, int]:
    return dict(jobs_rows(var_dir, "SELECT status, count(*) FROM jobs_job GROUP BY status"))


def broker_files(var_dir: Path) -> list[str]:
    """Messages still in the queue folder or held in a claim folder."""
    broker = var_dir / "broker"
    return [path.name for path in [*broker.glob("queue/*.msg"), *broker.glob("claimed/*/*.msg")]]


def test_message_names_sort_by_priority_then_age():
    names = [message_name("default", 0), message_name("default", 9), message_name("default", 5)]
    names += [message_name("default", 9), message_name("default", None), message_name("default", 42)]
    ranks = [name.split("-")[0] for name in sorted(names)]
    assert ranks == ["00", "00", "00", "04", "09", "09"]
    # Within a priority, the older first; unknown or out-of-range priorities
    # are clamped, as RabbitMQ clamps them to x-max-priority.
    assert sorted(names)[:3] == [names[1], names[3], names[5]]
    assert sorted(names)[-2:] == [names[0], names[4]]


def test_an_orphan_check_leaves_the_claim_folders_named_for_its_own_process(tmp_path):
    # Unlocked, as no other process would see it while this one lives: a
    # lockf from this process on it would succeed all the same.
    claim_root, queue, staging = tmp_path / "claimed", tmp_path / "queue", tmp_path / "staging"
    queue.mkdir()
    staging.mkdir()
    own = claim_root / f"{socket.gethostname()}-{os.getpid()}-0123abcd"
    own.mkdir(parents=True)
    (own / LOCK_NAME).touch()
    claimed = own / message_name("default", 0)
    claimed.write_text(json.dumps({"properties": {"delivery_tag": "t"}, "body": ""}))
    dead = claim_root / f"{socket.gethostname()}-{os.getpid() + 1}-4567cdef"
    dead.mkdir()
    (dead / LOCK_NAME).touch()
    (dead / message_name("default", 0)).write_text(json.dumps({"properties": {"delivery_tag": "u"}, "body": ""}))

    assert orphans_requeue(claim_root, queue, staging) == 1

    assert claimed.exists() and (own / LOCK_NAME).exists()
    assert not dead.exists() and len(list(queue.iterdir())) == 1


def test_a_high_priority_job_overtakes_a_backlog_of_low_ones_on_the_embedded_default(first_run):
    var_dir, env = first_run
    up = Up(
        env,
        port=free_port(),
        flower_port=free_port(),
        extra_args=("--concurrency", "1", "--no-flower", "--no-beat", "--no-smtp-sink", "--noreload"),
    ).start()
    try:
        up.wait_for_line(r"^worker:general\s*\|.* general@\S+ ready\.$")
        token = admin_token(env)
        status, blocker = http(f"{up.web}/api/jobs/", token=token, body={"task": "jobs.sleep", "args": [3, 1]})
        assert status == 202, blocker
        wait_for(
            lambda: http(blocker["url"], token=token)[1]["status"] == "STARTED",
            timeout=30,
            what="the single worker slot to be busy",
        )
        status, lows = http(
            f"{up.web}/api/jobs/bulk/", token=token, body={"task": "jobs.noop", "calls": [{}] * 60, "priority": "low"}
        )
        assert status == 202, lows
        status, high = http(f"{up.web}/api/jobs/", token=token, body={"task": "jobs.noop", "priority": "high"})
        assert status == 202, high

        wait_for(lambda: status_counts(var_dir).get("SUCCESS") == 62, timeout=120, what="all 62 jobs to succeed")
        (high_started,) = jobs_rows(var_dir, "SELECT started_at FROM jobs_job WHERE id = ?", [sqlite_id(high["id"])])[0]
        low_ids = [sqlite_id(job_id) for job_id in lows["ids"]]
        before = jobs_rows(
            var_dir,
            f"SELECT count(*) FROM jobs_job WHERE started_at < ? AND id IN ({','.join('?' * len(low_ids))})",
            [high_started, *low_ids],
        )[0][0]
        assert before == 0, up.output[-3000:]
    finally:
        up.stop()


def test_three_workers_and_two_producers_run_two_thousand_jobs_each_exactly_once(first_run, tmp_path):
    var_dir, env = first_run
    manage(env, "migrate", "--verbosity", "0")
    workers = [worker(env, tmp_path, f"w{number}", concurrency=2) for number in range(3)]
    enqueue = (
        "from jobs.services import job_enqueue_many; "
        "print(len(job_enqueue_many(task_name='jobs.noop', calls=[((), {})] * 1000, priority='low')))"
    )
    producers = [
        subprocess.Popen(
            [sys.executable, "manage.py", "shell", "-c", enqueue], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    try:
        for producer in producers:
            out, _ = producer.communicate(timeout=120)
            assert producer.returncode == 0 and out.split()[-1] == "1000"

        def all_finished():
            counts = status_counts(var_dir)
            return sum(counts.get(status, 0) for status in FINISHED) == 2000 and counts

        counts = wait_for(all_finished, timeout=300, interval=1, what="2,000 jobs to finish")
        assert counts == {"SUCCESS": 2000}
        # Each started once: no message was delivered twice.
        assert jobs_rows(var_dir, "SELECT deliveries, count(*) FROM jobs_job GROUP BY deliveries") == [(1, 2000)]
        assert jobs_rows(var_dir, "SELECT count(*) FROM django_celery_results_taskresult")[0][0] == 2000
        # Every worker took a share.
        ran = dict(jobs_rows(var_dir, "SELECT substr(worker, 1, 2), count(*) FROM jobs_job GROUP BY 1"))
        assert set(ran) == {"w0", "w1", "w2"}, ran
        wait_for(lambda: broker_files(var_dir) == [], timeout=10, what="every message to be acknowledged")
    finally:
        for program in workers:
            program.kill()


def test_the_job_of_a_worker_killed_mid_task_is_delivered_again_to_the_next_worker(first_run, tmp_path):
    var_dir, env = first_run
    manage(env, "migrate", "--verbosity", "0")
    first = worker(env, tmp_path, "first", concurrency=1)
    second = None
    try:
        job_id = manage(
            env, "shell", "-c", "from jobs.services import enqueue; print(enqueue('jobs.sleep', 3, 3).id)"
        ).split()[-1]
        row = f"SELECT status, deliveries FROM jobs_job WHERE id = '{sqlite_id(job_id)}'"
        wait_for(lambda: jobs_rows(var_dir, row)[0][0] == "STARTED", timeout=30, what="the job to start")
        first.kill()  # main process and pool, mid-task
        assert len(broker_files(var_dir)) == 1  # held by the dead worker's claim

        second = worker(env, tmp_path, "second", concurrency=1)
        wait_for(lambda: jobs_rows(var_dir, row)[0][0] in FINISHED, timeout=60, what="the job to finish")
        assert jobs_rows(var_dir, row)[0] == ("SUCCESS", 2), second.output()[-3000:]
        assert "Requeued 1 message(s) held by a consumer that died." in second.output()
        assert broker_files(var_dir) == []
    finally:
        for program in (first, second):
            if program is not None:
                program.kill()
