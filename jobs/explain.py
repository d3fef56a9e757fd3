""" "Why isn't it running?": one sentence for a job that has not finished,
saying what it waits for and what would unblock it, from facts the kit has
(the Job row, the relay's schedule, the broker's queue depth and consumers,
the mail rate limit, the queue's time limits).

The job page and the API show it (jobs.admin, jobs.api). Each call costs a
few indexed queries and, for QUEUED and PENDING jobs, the broker's queue
depths (cached per process for OPS_BROKER_CACHE_SECONDS, ops.broker).
"""

from datetime import datetime, timedelta

from django.conf import settings
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from jobs.exceptions import UnknownTask
from jobs.models import Job, JobStatus
from jobs.queues import PRIORITY_VALUE, QUEUE_TIME_LIMITS, WORKER_GROUPS, Priority, Queue
from jobs.registry import get_job_task

RELAY_SCHEDULE_NAME = "jobs-relay-outbox"


def _at(moment: datetime) -> str:
    return timezone.localtime(moment).strftime("%H:%M:%S")


def _seconds(delta: timedelta) -> str:
    return f"{max(0, round(delta.total_seconds()))} s"


def _queue_facts(queue: str):
    """(ready messages, consumers) of the queue on the broker, or None if the
    broker cannot be reached now."""
    from ops.broker import queue_depths

    depths = queue_depths()
    if depths is None:
        return None
    return depths.get(queue)


def _worker_group(queue: str) -> str | None:
    return next((name for name, queues in WORKER_GROUPS.items() if Queue(queue) in queues), None)


def _no_consumer(queue: str) -> str:
    group = _worker_group(queue)
    start = f"start one (manage.py worker --group {group})" if group else f"start one for it (--queues {queue})"
    return f"no worker consumes queue {queue}: {start}"


def _relay_schedule() -> tuple[datetime | None, timedelta]:
    """When beat last ran the outbox relay, and its interval."""
    from django_celery_beat.models import PeriodicTask

    interval = timedelta(seconds=settings.CELERY_BEAT_SCHEDULE[RELAY_SCHEDULE_NAME]["schedule"])
    entry = PeriodicTask.objects.filter(name=RELAY_SCHEDULE_NAME).only("last_run_at").first()
    return (entry.last_run_at if entry else None), interval


def _pending(job: Job, now: datetime) -> str:
    since = f"PENDING since {_at(job.created_at)}"
    horizon = now + timedelta(seconds=settings.JOBS_BROKER_ETA_HORIZON_SECONDS)
    if job.eta and job.eta > horizon:
        return (
            f"{since}: held in the database until its countdown at {_at(job.eta)}; the outbox relay publishes "
            f"it once it is due within {settings.JOBS_BROKER_ETA_HORIZON_SECONDS} s."
        )
    last_run, interval = _relay_schedule()
    if _queue_facts(job.queue) is None:
        return f"{since}: the broker is unreachable now; the outbox relay publishes it once the broker is back."
    if last_run is None:
        return (
            f"{since}: the broker has not confirmed it, and the outbox relay has never run: is beat running "
            "(manage.py beat)?"
        )
    next_run = last_run + interval
    if next_run < now - interval:
        return (
            f"{since}: the broker has not confirmed it; the outbox relay last ran at {_at(last_run)} and is "
            f"overdue (every {_seconds(interval)}): is beat running (manage.py beat)?"
        )
    return (
        f"{since}: the broker has not confirmed it yet; the outbox relay last ran at {_at(last_run)} and runs "
        f"next at {_at(next_run)}."
    )


def _ahead(job: Job) -> int:
    """QUEUED jobs of the same queue at its priority or higher that were
    queued before it: what a worker takes first."""
    mine = PRIORITY_VALUE[Priority(job.priority)]
    priorities = [priority.value for priority, value in PRIORITY_VALUE.items() if value >= mine]
    return (
        Job.objects.filter(
            queue=job.queue,
            status=JobStatus.QUEUED,
            priority__in=priorities,
            created_at__lt=job.created_at,
        )
        .exclude(pk=job.pk)
        .count()
    )


def _mail_rate_limited_until(job: Job, now: datetime) -> datetime | None:
    """When the mail rate limit frees its next slot, if that is later than
    now (mail jobs only, and only while a limit is set)."""
    if job.queue != Queue.EMAIL or settings.MAIL_RATE_PER_SECOND <= 0:
        return None
    from mail_tasks.models import RateBucket
    from mail_tasks.ratelimit import GLOBAL_KEY

    tat = RateBucket.objects.filter(key=GLOBAL_KEY).values_list("tat", flat=True).first()
    if tat is None:
        return None
    free_at = datetime.fromtimestamp(tat, tz=timezone.get_current_timezone())
    return free_at if free_at > now else None


def _queued(job: Job, now: datetime) -> str:
    if job.eta and job.eta > now:
        return f"QUEUED, held until its countdown at {_at(job.eta)} (in {_seconds(job.eta - now)})."
    facts = _queue_facts(job.queue)
    ahead = _ahead(job)
    where = (
        f"QUEUED on queue {job.queue} with {ahead} job{'s' if ahead != 1 else ''} ahead of it at its priority or higher"
    )
    if facts is None:
        return f"{where}; the broker is unreachable now, so no worker can take it until the broker is back."
    if facts.consumers == 0:
        return f"{where}, and {_no_consumer(job.queue)}."
    sentence = f"{where}, and {facts.consumers} consumer{'s' if facts.consumers != 1 else ''} on {job.queue}"
    if (free_at := _mail_rate_limited_until(job, now)) is not None:
        return f"{sentence}; mail is rate-limited until {_at(free_at)}."
    return f"{sentence}."


def _max_attempts(job: Job) -> int | None:
    try:
        task = get_job_task(job.task_name)
    except UnknownTask:
        return None
    return (task.max_retries or 0) + 1


def _retrying(job: Job, now: datetime) -> str:
    total = _max_attempts(job)
    of = f" of {total}" if total else ""
    # Celery's backoff (jobs.queues.RetryPolicy): up to 2^(k-1) s after the
    # k-th attempt failed, capped, with full jitter. The failure's exact time
    # is Celery's; the attempt's start bounds it from below.
    policy_cap = get_job_task(job.task_name).retry_backoff_max if total else 600
    wait = min(policy_cap, 2 ** max(0, job.attempts - 1))
    started = job.started_at or now
    next_at = started + timedelta(seconds=wait)
    when = f"next at {_at(next_at)} at the latest" if next_at > now else "next as soon as a worker takes it"
    sentence = f"RETRYING, attempt {job.attempts}{of} failed; {when}, after error: {job.error or 'unknown'}"
    if (free_at := _mail_rate_limited_until(job, now)) is not None:
        return f"{sentence}. Mail is rate-limited until {_at(free_at)}."
    return f"{sentence}."


def _started(job: Job, now: datetime) -> str:
    try:
        hard = get_job_task(job.task_name).time_limit
    except UnknownTask:
        hard = None
    hard = hard or QUEUE_TIME_LIMITS[Queue(job.queue)].hard
    started = job.started_at or now
    return (
        f"STARTED on worker {job.worker or 'unknown'} for {_seconds(now - started)}; its hard time limit stops "
        f"it at {_at(started + timedelta(seconds=hard))}."
    )


def job_explain(job: Job, now: datetime | None = None) -> str | None:
    """Why `job` has not finished, and what would unblock it; None once it has."""
    if job.is_finished:
        return None
    now = now or timezone.now()
    if job.status == JobStatus.PENDING:
        return _pending(job, now)
    if job.status == JobStatus.QUEUED:
        return _queued(job, now)
    if job.status == JobStatus.RETRYING:
        return _retrying(job, now)
    return _started(job, now)


# -- Links to where the job's work is seen ---------------------------------


def job_links(job: Job) -> list[tuple[str, str]]:
    """(url, label) of the job's domain object(s) in the admin (image,
    message, report run) and of its task page in Flower."""
    from mail_tasks.models import OutboundMessage
    from media_tasks.models import Image
    from reports.models import ReportRun

    found = []
    for model, label in ((Image, "image"), (OutboundMessage, "message"), (ReportRun, "report run")):
        for pk in model.objects.filter(job=job).values_list("pk", flat=True)[:3]:
            try:
                url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_change", args=[pk])
            except NoReverseMatch:
                continue
            found.append((url, f"{label} {pk}"))
    if settings.FLOWER_URL:
        found.append((f"{settings.FLOWER_URL.rstrip('/')}/task/{job.pk}", "Flower"))
    return found
