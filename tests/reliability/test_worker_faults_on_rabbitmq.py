"""Workers that die or are stopped while they hold jobs: nothing committed
is dropped. (A worker *child* killed mid-task, a whole worker killed during
one job, a poison message and the hard time limit are covered in
tests/jobs/test_lifecycle_on_rabbitmq.py; a host killed or stopped warmly
beside a second host in tests/ops/test_worker_hosts_on_rabbitmq.py.)"""

import signal
import subprocess

import pytest
from django_celery_results.models import TaskResult

from jobs.models import Job, JobStatus
from jobs.services import enqueue
from tests.helpers import wait_for

pytestmark = pytest.mark.integration

BATCH = 50


def statuses(jobs) -> dict:
    rows = Job.objects.filter(pk__in=[job.pk for job in jobs]).values_list("status", flat=True)
    counts: dict = {}
    for status in rows:
        counts[status] = counts.get(status, 0) + 1
    return counts


def wait_for_exit(worker, timeout: float) -> int:
    try:
        return worker.process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"worker still running {timeout}s after SIGTERM:\n{worker.read_log()[-3000:]}") from None


def test_a_worker_killed_with_sigkill_mid_batch_and_restarted_completes_all_fifty_jobs(start_worker, worker_env):
    # A job's start is written once it has run this long (jobs.starts): the
    # kill below comes when one shows as STARTED, so it cuts off a job whose
    # delivery was counted (a whole worker killed sooner leaves it uncounted).
    worker_env["JOBS_START_RECORD_DELAY_MS"] = "100"
    first = start_worker(concurrency=2)
    jobs = [enqueue("testapp.block", 0.5) for _ in range(BATCH)]
    wait_for(lambda: statuses(jobs).get(JobStatus.SUCCESS, 0) >= 6, timeout=60, what="the batch to be under way")
    wait_for(lambda: statuses(jobs).get(JobStatus.STARTED, 0) > 0, timeout=10, what="a job to show as STARTED")

    first.kill_main()  # main process and pool, SIGKILL: nothing gets to clean up
    left = BATCH - statuses(jobs).get(JobStatus.SUCCESS, 0)
    assert left > 0, "the batch was over before the kill: make the jobs longer"

    second = start_worker(concurrency=2)
    wait_for(
        lambda: statuses(jobs).get(JobStatus.SUCCESS, 0) == BATCH,
        timeout=90,
        interval=0.5,
        what=f"all {BATCH} jobs to succeed (now {statuses(jobs)})",
    )
    finished = Job.objects.filter(pk__in=[job.pk for job in jobs])
    # What the killed worker held unacknowledged ran again on the new one...
    rerun = finished.filter(attempts=2)
    assert rerun.exists()
    assert set(rerun.values_list("worker", flat=True)) == {second.name}
    # ...once: no job started more than twice, and each has one result row.
    assert not finished.filter(attempts__gt=2).exists()
    assert TaskResult.objects.filter(task_id__in=[str(job.pk) for job in jobs], status="SUCCESS").count() == BATCH


def test_a_warm_shutdown_lets_the_running_job_finish_before_the_worker_exits(start_worker, tmp_path):
    marker = tmp_path / "running"
    worker = start_worker()
    job = enqueue("testapp.slow_first_time", str(marker), 4)
    wait_for(marker.exists, what="the long job to start")

    worker.process.send_signal(signal.SIGTERM)
    # Warm shutdown waits for the job, which is bounded by its hard time
    # limit (90 s on "default"); this one needs 4 s.
    assert wait_for_exit(worker, timeout=30) == 0, worker.read_log()[-3000:]

    job.refresh_from_db()
    assert (job.status, job.attempts) == (JobStatus.SUCCESS, 1)
    assert TaskResult.objects.get(task_id=str(job.id)).result == '"first run"'


def test_a_soft_shutdown_hands_a_job_still_running_after_the_grace_back_to_the_queue(
    start_worker, worker_env, tmp_path
):
    """What an orchestrator that only sends SIGTERM gets with REMAP_SIGTERM=
    SIGQUIT: the worker waits CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT, then
    stops the job without acknowledging it, and the next worker runs it."""
    marker = tmp_path / "running"
    worker_env.update(CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT="2", REMAP_SIGTERM="SIGQUIT")
    first = start_worker()
    job = enqueue("testapp.slow_first_time", str(marker), 120)
    wait_for(marker.exists, what="the long job to start")

    first.process.send_signal(signal.SIGTERM)
    wait_for_exit(first, timeout=2 + 20)
    assert "Initiating Soft Shutdown, terminating in 2" in first.read_log()
    job.refresh_from_db()
    assert job.status == JobStatus.STARTED  # not finished, not failed, not dropped

    second = start_worker()
    wait_for(
        lambda: Job.objects.get(pk=job.pk).status == JobStatus.SUCCESS, timeout=30, what="the handed-back job to run"
    )
    job.refresh_from_db()
    assert (job.attempts, job.worker) == (2, second.name)
    # The hand-back counts as a delivery, like a crash (README, Guarantees).
    assert job.deliveries == 2
    assert TaskResult.objects.get(task_id=str(job.id)).result == '"second run"'
