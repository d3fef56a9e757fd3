import os
import signal
import time
from pathlib import Path

from jobs.base_task import job_task
from jobs.exceptions import BadInput, TransientError
from jobs.queues import Queue, RetryPolicy

# Retries in tests wait fractions of a second, not minutes.
FAST_RETRIES = RetryPolicy(max_retries=3, backoff_seconds=1, backoff_max_seconds=1, jitter=False)


@job_task(name="testapp.block", queue=Queue.DEFAULT, public=True)
def block(self, seconds: float, marker: str = "") -> str:
    """Sleeps; touches `marker` first so a test knows it is running."""
    if marker:
        Path(marker).touch()
    time.sleep(seconds)
    return "done"


@job_task(name="testapp.fail_with", queue=Queue.DEFAULT, public=True)
def fail_with(self, message: str) -> None:
    raise RuntimeError(message)


@job_task(name="testapp.bad_input", queue=Queue.DEFAULT)
def bad_input(self, value: str) -> None:
    raise BadInput(f"{value!r} is not a valid colour")


@job_task(name="testapp.fail_unless_file", queue=Queue.DEFAULT, public=True)
def fail_unless_file(self, path: str) -> str:
    """Fails until `path` exists: what a retry after a fix looks like."""
    if not Path(path).exists():
        raise RuntimeError(f"{path} is missing")
    return "found"


@job_task(
    name="testapp.transient_then_ok",
    queue=Queue.DEFAULT,
    transient_errors=(TransientError,),
    retry_policy=FAST_RETRIES,
)
def transient_then_ok(self, failures: int) -> int:
    """Raises a transient error on its first `failures` runs."""
    if self.request.retries < failures:
        raise TransientError(f"attempt {self.request.retries + 1} failed")
    return self.request.retries


@job_task(name="testapp.kill_worker_once", queue=Queue.DEFAULT)
def kill_worker_once(self, marker: str) -> str:
    """SIGKILLs its own worker child the first time (marker absent)."""
    if not Path(marker).exists():
        Path(marker).touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return "survived"


@job_task(name="testapp.kill_worker_always", queue=Queue.DEFAULT)
def kill_worker_always(self) -> None:
    """A poison message: its worker child dies every time it runs."""
    os.kill(os.getpid(), signal.SIGKILL)


@job_task(name="testapp.exceed_time_limit", queue=Queue.DEFAULT, time_limit=2, soft_time_limit=1)
def exceed_time_limit(self, seconds: float) -> None:
    # Ignores the soft limit on purpose, so the hard limit has to kill it.
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            time.sleep(0.1)
        except Exception:  # SoftTimeLimitExceeded
            continue


@job_task(name="testapp.report_progress", queue=Queue.DEFAULT)
def report_progress(self, marker: str, hold: float) -> None:
    self.progress(40, "halfway there")
    Path(marker).touch()
    time.sleep(hold)


# --- tests/reliability: fault injection --------------------------------------


@job_task(name="testapp.slow_first_time", queue=Queue.DEFAULT)
def slow_first_time(self, marker: str, seconds: float) -> str:
    """Touches `marker` and sleeps `seconds` the first time it runs; returns
    at once on a later delivery. A job that was handed back mid-run shows
    up as attempts == 2 with a quick second run."""
    if Path(marker).exists():
        return "second run"
    Path(marker).touch()
    time.sleep(seconds)
    return "first run"


# One do-nothing task per queue, so a load test exercises every queue.
@job_task(name="testapp.noop_email", queue=Queue.EMAIL)
def noop_email(self) -> None:
    pass


@job_task(name="testapp.noop_images", queue=Queue.IMAGES)
def noop_images(self) -> None:
    pass


@job_task(name="testapp.noop_reports", queue=Queue.REPORTS)
def noop_reports(self) -> None:
    pass


# --- Django's Tasks API (jobs.django_tasks): plain functions under @task ----

try:
    from django.tasks import task
except ImportError:  # Django before 6.0: the django-tasks backport
    from django_tasks import task

from jobs.django_tasks import transient_errors  # noqa: E402


@task
def dj_record(path: str, line: str) -> str:
    """Appends `line` to `path`: each run leaves one line, so a test counts runs."""
    with open(path, "a") as file:
        file.write(line + "\n")
    return line


@task(queue_name="email", priority=-20)
def dj_add(a: int, b: int) -> dict:
    return {"sum": a + b, "pair": (a, b)}


@task
async def dj_double(value: int) -> int:
    return value * 2


@task(takes_context=True)
@transient_errors(ConnectionError, retry_policy=FAST_RETRIES)
def dj_flaky_with_context(context, failures: int) -> dict:
    """Reports progress, then fails with a declared transient error on its
    first `failures` attempts."""
    context.progress(40, f"attempt {context.attempt}")
    if context.attempt <= failures:
        raise ConnectionError(f"attempt {context.attempt} could not connect")
    return {"attempt": context.attempt, "job_id": context.job_id, "retries": context.retries}


@task
def dj_fail_unless_file(path: str) -> str:
    if not Path(path).exists():
        raise RuntimeError(f"{path} is missing")
    return "found"


@task
def dj_kill_worker_once(marker: str) -> str:
    """SIGKILLs its own worker child the first time (marker absent)."""
    if not Path(marker).exists():
        Path(marker).touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return "survived"


@task
def dj_kill_worker_always() -> None:
    """A poison message: its worker child dies every time it runs."""
    os.kill(os.getpid(), signal.SIGKILL)


@task
def dj_block(seconds: float, marker: str) -> None:
    Path(marker).touch()
    time.sleep(seconds)
