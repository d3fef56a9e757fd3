"""python -m bench.latency [--quick] [--jobs N] [--rounds R]

How long one job waits on an idle worker, and how long its end takes to
show, one job at a time (the next is sent once the last is done):

- kit:         POST /api/jobs/ {"task": "jobs.noop"}, then GET
               /api/jobs/<id>/ every POLL_SECONDS until it answers SUCCESS.
               Start: from the 202 (and from sending the POST) to
               Job.started_at, written by the worker child as the task body
               begins. Visibility: from Job.finished_at, written by the child
               with the result, to the first GET that answered SUCCESS (to
               its answer, and to its sending: the row became visible
               before the answer, and can have become so after the
               sending, as the GET reads it part way through).
- kit-enqueue: jobs.services.job_enqueue called directly, no HTTP: the
               kit's publishing and tracking without the API's own cost.
- bare:        bench.noop sent with plain Celery send_task to a bare worker
               (bench/settings_bare.py); the start is task_prerun, as
               bench/tasks.py stamps it. Bare Celery stores nothing, so it
               has no visibility to compare.

The kit publishes inside the request, with a publisher confirm, before the
view answers: the job may start before the client has its 202, and then
"202 -> started" is negative. The comparison with bare Celery is therefore
made from the call (POST sent, job_enqueue or send_task called), which
includes what enqueueing costs the caller.

The API runs in-process through Django's test Client (middleware, DRF,
token authentication, the view itself), not over a socket: no HTTP server
or network is included. All times are the same machine's wall clock. Both
workers (2 prefork children each, no gossip, mingle, heartbeat or events)
run for the whole benchmark and sit idle between jobs; the variants
alternate in blocks, one block each per round. Each worker first runs a few
jobs that are not counted (imports, connections).
"""

import argparse
import os
import time

import django

# The models below need Django set up first, on the benchmark's own settings
# (its own database and vhost, bench/settings_kit.py).
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings_kit")
django.setup()

from django.contrib.auth.models import Permission, User  # noqa: E402
from django.test import Client  # noqa: E402
from rest_framework.authtoken.models import Token  # noqa: E402

from bench import harness  # noqa: E402
from jobs.models import ACTIVE_STATUSES, Job, JobStatus  # noqa: E402
from jobs.queues import Queue  # noqa: E402
from jobs.services import job_enqueue  # noqa: E402

QUICK = {"jobs": 200, "rounds": 4}
FULL = {"jobs": 500, "rounds": 5}
CONCURRENCY = 2
# How often a client polls the job, and how often the bench looks for the
# end of a job it does not poll over the API. A GET takes a few milliseconds
# itself, so "finished -> SUCCESS GET answered" is late by at most one
# interval plus one GET.
POLL_SECONDS = 0.002
# Not counted: the first jobs of a fresh worker open its connections.
WARMUP_JOBS = 5
# Between jobs, so the worker has acknowledged the last one and is idle.
IDLE_SECONDS = 0.01
TIMEOUT_SECONDS = 30


def _ms(seconds: float) -> float:
    return seconds * 1000


def _wait(found, what: str):
    """Poll `found()` every POLL_SECONDS until it returns something."""
    deadline = time.monotonic() + TIMEOUT_SECONDS
    while (value := found()) is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not done within {TIMEOUT_SECONDS} s; see the worker log.")
        time.sleep(POLL_SECONDS)
    return value


class Kit:
    name = "kit"
    meaning = "jobs.noop by POST /api/jobs/ (in-process, token auth), polled with GET /api/jobs/<id>/"
    worker = "kit"

    def __init__(self):
        # An API client's user: staff, may enqueue and read jobs.
        user, _ = User.objects.update_or_create(username="bench-latency", defaults={"is_staff": True})
        user.user_permissions.set(
            Permission.objects.filter(content_type__app_label="jobs", codename__in=["add_job", "view_job"])
        )
        token, _ = Token.objects.get_or_create(user=user)
        self.client = Client(headers={"authorization": f"Token {token.key}"})
        self.get_seconds: list[float] = []

    def _shows_success(self, job_id: str) -> tuple[float, float] | None:
        """One GET: when it was sent and answered if it shows SUCCESS."""
        sent = time.time()
        status = self.client.get(f"/api/jobs/{job_id}/").json()["status"]
        answered = time.time()
        self.get_seconds.append(answered - sent)
        if status not in (*ACTIVE_STATUSES, JobStatus.SUCCESS):
            raise RuntimeError(f"Job {job_id} ended {status}; see the worker log.")
        return (sent, answered) if status == JobStatus.SUCCESS else None

    def one(self) -> dict:
        sent = time.time()
        response = self.client.post("/api/jobs/", {"task": "jobs.noop"}, content_type="application/json")
        accepted = time.time()
        if response.status_code != 202:
            raise RuntimeError(f"POST /api/jobs/ answered {response.status_code}: {response.content[:200]!r}")
        job_id = response.json()["id"]
        asked, seen = _wait(lambda: self._shows_success(job_id), f"job {job_id}")
        job = Job.objects.get(pk=job_id)
        return {
            "call_to_start_ms": _ms(job.started_at.timestamp() - sent),
            "start_ms": _ms(job.started_at.timestamp() - accepted),
            "visible_ms": _ms(seen - job.finished_at.timestamp()),
            "visible_get_sent_ms": _ms(asked - job.finished_at.timestamp()),
        }


class KitEnqueue:
    name = "kit-enqueue"
    meaning = "jobs.noop by jobs.services.job_enqueue, in-process, no HTTP"
    worker = "kit"

    def one(self) -> dict:
        called = time.time()
        job = job_enqueue(task_name="jobs.noop")
        returned = time.time()
        finished = Job.objects.filter(pk=job.pk, finished_at__isnull=False).values_list("status", "started_at")
        status, started_at = _wait(finished.first, f"job {job.pk}")
        if status != JobStatus.SUCCESS:
            raise RuntimeError(f"Job {job.pk} ended {status}; see the worker log.")
        return {
            "call_to_start_ms": _ms(started_at.timestamp() - called),
            "start_ms": _ms(started_at.timestamp() - returned),
        }


class Bare:
    name = "bare"
    meaning = "bench.noop by plain send_task, bare worker (results ignored, acks on receipt), stamped at task_prerun"
    worker = "bare"

    def __init__(self, app, stamps):
        self.app = app
        self.stamps = stamps
        self.done = 0

    def one(self) -> dict:
        with self.app.producer_or_acquire() as producer:
            called = time.time()
            self.app.send_task("bench.noop", producer=producer)
            returned = time.time()

        def stamped():
            # The worker appends the line once the task has finished.
            stamps = harness.read_stamps(self.stamps)
            return stamps[self.done] if len(stamps) > self.done else None

        started, _ = _wait(stamped, "bench.noop")
        self.done += 1
        return {"call_to_start_ms": _ms(started - called), "start_ms": _ms(started - returned)}


def run_block(variant, jobs: int) -> list[dict]:
    figures = []
    for _ in range(jobs):
        figures.append(variant.one())
        time.sleep(IDLE_SECONDS)
    return figures


def _line(label: str, p: dict) -> str:
    return f"{label:<48} {p['p50']:7.2f}  {p['p99']:7.2f}  {p['max']:7.2f}"


def run(*, quick: bool, jobs: int | None = None, rounds: int | None = None) -> dict:
    preset = QUICK if quick else FULL
    rounds = rounds or preset["rounds"]
    per_round = -(-(jobs or preset["jobs"]) // rounds)
    jobs = per_round * rounds
    started_at, scratch, machine = harness.prepare_run()
    harness.empty_job_tables()
    print(
        f"{jobs:,} jobs per variant, one at a time, in {rounds} rounds of {per_round}; {CONCURRENCY} prefork "
        f"children per worker; API in-process (Django test Client); polled every {_ms(POLL_SECONDS):.0f} ms\n",
        flush=True,
    )

    bare_app = harness.plain_celery_app("bench.settings_bare")
    stamps = scratch / "bare-stamps.txt"
    stamps.unlink(missing_ok=True)
    kit = Kit()
    variants = [kit, KitEnqueue(), Bare(bare_app, stamps)]
    workers = {
        "kit": harness.Worker(
            name="latency-kit",
            settings_module="bench.settings_kit",
            queue=Queue.DEFAULT.value,
            concurrency=CONCURRENCY,
            log_path=scratch / "worker-kit.log",
        ),
        "bare": harness.Worker(
            name="latency-bare",
            settings_module="bench.settings_bare",
            queue=bare_app.conf.task_default_queue,
            concurrency=CONCURRENCY,
            log_path=scratch / "worker-bare.log",
            env={"BENCH_STAMP_FILE": str(stamps)},
        ),
    }
    figures: dict[str, list[dict]] = {variant.name: [] for variant in variants}
    per_round_p50: dict[str, list[float]] = {variant.name: [] for variant in variants}
    measurements = []
    with workers["kit"], workers["bare"]:
        for variant in variants:
            # The first job also waits for its worker to come up.
            run_block(variant, WARMUP_JOBS)
        kit.get_seconds.clear()
        for round_number in range(1, rounds + 1):
            for variant in variants:
                workers[variant.worker].check_alive()
                block = run_block(variant, per_round)
                figures[variant.name] += block
                p50 = harness.percentiles([f["call_to_start_ms"] for f in block])["p50"]
                per_round_p50[variant.name].append(p50)
                measurements += [{"round": round_number, "variant": variant.name, **f} for f in block]
                print(f"round {round_number}  {variant.name:<11} call -> started p50 {p50:6.2f} ms", flush=True)

    summary = {
        name: {metric: harness.percentiles([f[metric] for f in rows]) for metric in rows[0]}
        for name, rows in figures.items()
    }
    get_ms = harness.percentiles([_ms(s) for s in kit.get_seconds])
    p50 = {name: {"median": figures["call_to_start_ms"]["p50"]} for name, figures in summary.items()}
    ratios = {}
    for name in ("kit", "kit-enqueue"):
        ratios |= harness.kit_ratios(per_round_p50, p50, others=("bare",), kit=name)

    print(f"\n{'ms':<48} {'p50':>7}  {'p99':>7}  {'max':>7}")
    print(_line("kit          POST sent -> started", summary["kit"]["call_to_start_ms"]))
    print(_line("kit          202 -> started", summary["kit"]["start_ms"]))
    print(_line("kit          finished -> SUCCESS GET answered", summary["kit"]["visible_ms"]))
    print(_line("kit          finished -> SUCCESS GET sent", summary["kit"]["visible_get_sent_ms"]))
    print(_line("kit-enqueue  job_enqueue called -> started", summary["kit-enqueue"]["call_to_start_ms"]))
    print(_line("kit-enqueue  job_enqueue returned -> started", summary["kit-enqueue"]["start_ms"]))
    print(_line("bare         send_task called -> started", summary["bare"]["call_to_start_ms"]))
    print(_line("bare         send_task returned -> started", summary["bare"]["start_ms"]))
    print(
        f"\nVisibility resolution: a poll every {_ms(POLL_SECONDS):.0f} ms plus one GET "
        f"(GET p50 {get_ms['p50']:.2f} ms, p99 {get_ms['p99']:.2f} ms)."
    )
    print("Ratio of the call -> started p50s:")
    harness.print_ratios(ratios, width=16)

    return {
        "benchmark": "latency",
        "started_at": started_at,
        "machine": machine,
        "parameters": {
            "jobs": jobs,
            "rounds": rounds,
            "concurrency": CONCURRENCY,
            "pool": "prefork",
            "api": "in-process, django.test.Client, token authentication",
            "poll_seconds": POLL_SECONDS,
            "warmup_jobs": WARMUP_JOBS,
        },
        "variants": {variant.name: variant.meaning for variant in variants},
        "measurements": measurements,
        "summary_ms": summary,
        "get_ms": get_ms,
        "ratios_call_to_start_p50": ratios,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.latency", description="Job latency on an idle worker (not a test)."
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK['jobs']} jobs per variant in {QUICK['rounds']} rounds"
    )
    parser.add_argument("--jobs", type=int, help=f"jobs per variant (default {FULL['jobs']})")
    parser.add_argument(
        "--rounds", type=int, help=f"rounds, each running a block of every variant (default {FULL['rounds']})"
    )
    args = parser.parse_args()
    harness.report(run(quick=args.quick, jobs=args.jobs, rounds=args.rounds))


if __name__ == "__main__":
    main()
