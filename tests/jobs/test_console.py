"""The admin as the daily console, on PostgreSQL and RabbitMQ without a
worker: search over errors and arguments (and its index), the list's
columns, retried and discarded failures, retry-all and BadInput, failures
grouped by cause, cancel's confirmation, the read-only TaskResult admin,
and "why isn't it running?" for each unfinished state.

Tests run inside a transaction that never commits, so nothing a retry
creates is published to the broker.
"""

from datetime import timedelta

import pytest
from celery import current_app
from django.contrib.admin.models import LogEntry
from django.db import connection
from django.urls import reverse
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask
from django_celery_results.models import TaskResult

from jobs import explain, failures
from jobs.models import Job, JobStatus
from jobs.search import SEARCH_INDEX_NAME, jobs_search
from jobs.services import enqueue
from ops.broker import cache as broker_cache

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:jobs_job_changelist")
RETRY_FAILED = reverse("admin:jobs_job_retry_failed")
GROUPS = reverse("admin:jobs_job_failure_groups")


def make_job(task_name="testapp.fail_with", *args, status=JobStatus.QUEUED, error="", **fields) -> Job:
    job = enqueue(task_name, *args)
    Job.objects.filter(pk=job.pk).update(status=status, error=error, **fields)
    job.refresh_from_db()
    return job


def listed(response) -> set:
    return {job.pk for job in response.context["cl"].result_list}


def shown_messages(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


# -- Search ----------------------------------------------------------------


def test_search_finds_a_word_of_the_error_and_an_argument(admin_client):
    disk = make_job("testapp.fail_with", "x", status=JobStatus.FAILURE, error="RuntimeError: the disk is on fire")
    mail = make_job("testapp.fail_with", "someone@example.org", status=JobStatus.SUCCESS)
    other = make_job("jobs.noop", status=JobStatus.SUCCESS)

    assert listed(admin_client.get(CHANGELIST, {"q": "ON FIRE"})) == {disk.pk}
    assert listed(admin_client.get(CHANGELIST, {"q": "someone@example"})) == {mail.pk}
    assert listed(admin_client.get(CHANGELIST, {"q": str(other.pk)[:8]})) == {other.pk}
    assert listed(admin_client.get(CHANGELIST, {"q": "noop"})) == {other.pk}


def test_a_search_asks_the_index_for_its_most_distinctive_word_and_checks_the_whole_term(admin_client):
    from jobs.search import _index_probe

    assert _index_probe("user-500007@example.org") == "500007"
    assert _index_probe("certificate has expired") == "certificate"
    assert _index_probe("ab") == "ab"
    wanted = make_job("testapp.fail_with", "user-500007@example.org", status=JobStatus.SUCCESS)
    make_job("testapp.fail_with", "user-500007@example.net", status=JobStatus.SUCCESS)  # the word, not the term

    assert listed(admin_client.get(CHANGELIST, {"q": "USER-500007@example.org"})) == {wanted.pk}


def test_the_search_uses_its_trigram_index_on_postgresql():
    make_job("testapp.fail_with", "x", status=JobStatus.FAILURE, error="RuntimeError: the disk is on fire")
    with connection.cursor() as cursor:
        # A table this small is cheaper to scan; forbid that, to see whether
        # the index matches the query's expression at all.
        cursor.execute("SET LOCAL enable_seqscan = off")
        # Nor walk the created_at index in the list's order, filtering as it
        # goes (what the planner picks when its row estimates come from the
        # larger tables of earlier tests): only a bitmap scan is left, and
        # only an index on the searched expression can feed one.
        cursor.execute("SET LOCAL enable_indexscan = off")
        plan = jobs_search(Job.objects.all(), "disk is on").explain()
    assert SEARCH_INDEX_NAME in plan


def test_a_common_term_counts_up_to_a_limit_and_reads_newest_first(admin_client, monkeypatch):
    from jobs import search

    # The limits of a million-job table, scaled to five jobs.
    monkeypatch.setattr(search, "PROBE_CANDIDATE_LIMIT", 2)
    monkeypatch.setattr(search, "SEARCH_COUNT_LIMIT", 3)
    now = timezone.now()
    timeouts = [
        make_job(
            "testapp.fail_with",
            str(n),
            status=JobStatus.FAILURE,
            error=f"TimeoutError: 10.0.0.{n} timed out",
            created_at=now - timedelta(minutes=n),
        )
        for n in range(5)
    ]
    make_job("testapp.fail_with", "x", status=JobStatus.FAILURE, error="RuntimeError: the disk is on fire")

    response = admin_client.get(CHANGELIST, {"q": "timed out", "status__exact": "FAILURE"})
    changelist = response.context["cl"]
    assert changelist.paginator.count_capped and changelist.result_count == 3
    html = response.content.decode()
    assert "more than 3 results" in html and "more than 3</span> jobs" in html
    assert "Select all jobs matching the search (more than 3)" in html
    # Only the count stops: every match is listed (one page of 100).
    assert listed(response) == {job.pk for job in timeouts}

    searched = jobs_search(Job.objects.all(), "timed out")
    assert [job.pk for job in searched.order_by("-created_at")[:2]] == [timeouts[0].pk, timeouts[1].pk]
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        plan = searched.order_by("-created_at")[:2].explain()
    # Newest first along created_at, not every match through the trigram index.
    assert SEARCH_INDEX_NAME not in plan and "Index Scan Backward" in plan

    # A common word in a term that few jobs hold: the index, on the whole term.
    rare_term = jobs_search(Job.objects.all(), "timed out after")
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        assert SEARCH_INDEX_NAME in rare_term.order_by().explain()
    assert not rare_term.exists()

    # A rare term keeps its exact count and the index.
    response = admin_client.get(CHANGELIST, {"q": "on fire", "status__exact": "FAILURE"})
    assert not response.context["cl"].paginator.count_capped and response.context["cl"].result_count == 1
    assert "more than" not in response.content.decode()
    # Without a search the count is exact.
    response = admin_client.get(CHANGELIST, {"status__exact": "FAILURE"})
    assert response.context["cl"].result_count == 6 and "more than" not in response.content.decode()


# -- The list ----------------------------------------------------------------


def test_the_list_shows_a_one_line_error_wait_run_and_times_to_the_second(admin_client):
    now = timezone.now()
    make_job(
        "testapp.fail_with",
        "x",
        status=JobStatus.FAILURE,
        error="ValueError: first line\nsecond line",
        queued_at=now - timedelta(seconds=30),
        started_at=now - timedelta(seconds=20),
        finished_at=now - timedelta(seconds=17),
    )
    html = admin_client.get(CHANGELIST).content.decode()

    assert 'title="ValueError: first line\nsecond line">ValueError: first line</span>' in html
    assert "10.00 s" in html and "3.00 s" in html  # wait, run
    assert 'class="job-time"' in html and " s ago</time>" in html
    assert timezone.localtime(Job.objects.get().created_at).strftime("%H:%M:%S") in html


def test_status_names_are_the_codes_in_the_filter_too(admin_client):
    html = admin_client.get(CHANGELIST).content.decode()
    assert 'title="Cancelled">REVOKED</a>' in html
    assert ">Cancelled</a>" not in html


# -- Retried and discarded failures -------------------------------------------


def test_a_retried_failure_is_marked_linked_and_hidden_until_asked(admin_client):
    failed = make_job(status=JobStatus.FAILURE, error="RuntimeError: x")
    admin_client.post(reverse("admin:jobs_job_retry", args=[failed.pk]))
    retry = Job.objects.get(retry_of=failed)

    default = admin_client.get(CHANGELIST, {"status__exact": "FAILURE"})
    shown = admin_client.get(CHANGELIST, {"status__exact": "FAILURE", "superseded": "show"})

    assert failed.pk not in listed(default)
    assert failed.pk in listed(shown)
    assert f'href="{reverse("admin:jobs_job_change", args=[retry.pk])}"' in shown.content.decode()
    assert "retried &rarr; " + str(retry.pk)[:8] in shown.content.decode()


def test_retrying_a_retried_job_retries_its_latest_attempt(admin_client):
    original = make_job(status=JobStatus.FAILURE, error="RuntimeError: x")
    admin_client.post(reverse("admin:jobs_job_retry", args=[original.pk]))
    first_retry = Job.objects.get(retry_of=original)
    Job.objects.filter(pk=first_retry.pk).update(status=JobStatus.FAILURE, error="RuntimeError: y")

    page = admin_client.get(reverse("admin:jobs_job_change", args=[original.pk])).content.decode()
    response = admin_client.post(reverse("admin:jobs_job_retry", args=[original.pk]))

    assert "Retry its latest attempt" in page
    second_retry = Job.objects.get(retry_of=first_retry)
    assert response["Location"] == reverse("admin:jobs_job_change", args=[second_retry.pk])
    assert Job.objects.filter(retry_of=original).count() == 1


def test_retrying_a_job_whose_retry_is_still_queued_is_skipped_with_the_reason(admin_client):
    original = make_job(status=JobStatus.FAILURE, error="RuntimeError: x")
    admin_client.post(reverse("admin:jobs_job_retry", args=[original.pk]))
    retry = Job.objects.get(retry_of=original)

    response = admin_client.post(reverse("admin:jobs_job_retry", args=[original.pk]), follow=True)

    assert Job.objects.count() == 2
    assert f"because its latest attempt {str(retry.pk)[:8]} was {retry.status}" in " ".join(shown_messages(response))


def test_retry_all_leaves_out_bad_input_and_says_how_many_and_why(admin_client):
    crashed = make_job(status=JobStatus.FAILURE, error="RuntimeError: the disk is on fire")
    rejected = [make_job(status=JobStatus.FAILURE, error=f"BadInput: image {n} is not an image") for n in (1, 2)]

    confirmation = admin_client.get(RETRY_FAILED).content.decode()
    response = admin_client.post(RETRY_FAILED, follow=True)

    assert '<strong class="job-retry-count">1</strong>' in confirmation
    assert "<strong>2</strong> more failed on bad input (BadInput)" in confirmation
    assert set(Job.objects.filter(retry_of__isnull=False).values_list("retry_of", flat=True)) == {crashed.pk}
    said = shown_messages(response)
    assert "Retried 1 job." in said
    assert any(message.startswith("Left out 2 jobs that failed on bad input (BadInput)") for message in said)

    admin_client.post(RETRY_FAILED, {"include_bad_input": "yes"})
    assert set(Job.objects.filter(retry_of__in=[job.pk for job in rejected]).values_list("retry_of", flat=True)) == {
        job.pk for job in rejected
    }


# -- Failures grouped by cause -------------------------------------------------


def test_the_fingerprint_normalises_numbers_and_ids():
    one = failures.fingerprint(
        "media_tasks.thumbnail_create", "BadInput: image 12 (3f2a9c1e-0000-4000-8000-0123456789ab) is 20000x20000"
    )
    two = failures.fingerprint(
        "media_tasks.thumbnail_create", "BadInput: image 7 (8b1c2d3e-1111-4111-8111-abcdefabcdef) is 30000x10"
    )
    assert one == two == ("media_tasks.thumbnail_create", "BadInput", "image <n> (<id>) is <n>x<n>")
    assert failures.fingerprint("t", "Started 400 s ago and never finished: its worker vanished.")[1] == ""


def test_failures_are_grouped_by_cause_with_count_first_and_last_seen(admin_client):
    now = timezone.now()
    for minutes in (30, 20, 10):
        make_job(
            status=JobStatus.FAILURE,
            error=f"RuntimeError: timeout after {minutes} s",
            finished_at=now - timedelta(minutes=minutes),
        )
    make_job(status=JobStatus.DEAD, error="RuntimeError: something else")
    make_job(status=JobStatus.SUCCESS)

    response = admin_client.get(GROUPS)

    groups = response.context["groups"]
    assert [(group.count, group.message) for group in groups] == [(3, "timeout after <n> s"), (1, "something else")]
    biggest = groups[0]
    assert (biggest.first_seen, biggest.last_seen) == (now - timedelta(minutes=30), now - timedelta(minutes=10))
    assert 'class="job-group-retry"' in response.content.decode()


def test_a_group_is_retried_and_another_discarded_from_its_page(admin_client):
    timeouts = [make_job(status=JobStatus.FAILURE, error=f"RuntimeError: timeout after {n} s") for n in (1, 2)]
    other = make_job(status=JobStatus.FAILURE, error="KeyError: 'x'")
    groups = {group.exc_type: group for group in failures.failure_groups().groups}
    action = "admin:jobs_job_failure_group_action"

    admin_client.post(reverse(action, args=[groups["RuntimeError"].key]), {"action": "retry"})
    response = admin_client.post(reverse(action, args=[groups["KeyError"].key]), {"action": "discard"}, follow=True)

    assert Job.objects.filter(retry_of__in=[job.pk for job in timeouts]).count() == 2
    other.refresh_from_db()
    assert other.resolved_at is not None and not Job.objects.filter(retry_of=other).exists()
    assert LogEntry.objects.get(object_id=str(other.pk)).change_message == "Discarded (marked resolved)."
    assert response.context["groups"] == []  # both groups are dealt with
    assert other.pk not in listed(admin_client.get(CHANGELIST, {"status__exact": "FAILURE"}))


# -- Cancel asks first ----------------------------------------------------------


def test_cancel_asks_for_confirmation_before_killing_a_running_job(admin_client):
    running = make_job("jobs.sleep", status=JobStatus.STARTED)
    url = reverse("admin:jobs_job_cancel", args=[running.pk])

    page = admin_client.get(reverse("admin:jobs_job_change", args=[running.pk])).content.decode()
    confirmation = admin_client.get(url)

    assert f'href="{url}" class="job-cancel"' in page
    assert "cancelling kills it mid-task" in confirmation.content.decode()
    assert Job.objects.get(pk=running.pk).status == JobStatus.STARTED


def test_the_cancel_action_asks_before_it_cancels(admin_client):
    queued = make_job("jobs.noop", status=JobStatus.QUEUED)
    data = {"action": "cancel_selected", "_selected_action": [str(queued.pk)]}

    confirmation = admin_client.post(CHANGELIST, data)
    assert "Yes, cancel" in confirmation.content.decode()
    assert Job.objects.get(pk=queued.pk).status == JobStatus.QUEUED

    admin_client.post(CHANGELIST, {**data, "confirmed": "yes"})
    assert Job.objects.get(pk=queued.pk).status == JobStatus.REVOKED


# -- TaskResult is read-only ------------------------------------------------------


def test_the_task_result_admin_is_read_only(admin_client):
    result = TaskResult.objects.create(task_id="abc", status="SUCCESS", result="1")
    change = reverse("admin:django_celery_results_taskresult_change", args=[result.pk])

    assert admin_client.get(reverse("admin:django_celery_results_taskresult_add")).status_code == 403
    html = admin_client.get(change).content.decode()
    assert 'name="_save"' not in html
    assert admin_client.post(change, {"status": "FAILURE"}).status_code == 403
    assert TaskResult.objects.get(pk=result.pk).status == "SUCCESS"
    assert admin_client.get(reverse("admin:django_celery_results_groupresult_add")).status_code == 403


# -- Why isn't it running? ----------------------------------------------------------


@pytest.fixture
def fresh_broker_facts(broker):
    broker_cache.clear()
    yield
    broker_cache.clear()


def test_a_queued_job_with_no_consumer_says_so(fresh_broker_facts):
    ahead = [make_job("jobs.noop", status=JobStatus.QUEUED) for _ in range(2)]
    job = make_job("jobs.noop", status=JobStatus.QUEUED)
    make_job("jobs.noop", status=JobStatus.QUEUED, priority="low")

    sentence = explain.job_explain(job)

    assert len(ahead) == 2
    assert sentence == (
        "QUEUED on queue default with 2 jobs ahead of it at its priority or higher, and no worker consumes "
        "queue default: start one (manage.py worker --group general)."
    )


def test_a_queued_job_with_a_consumer_counts_it(fresh_broker_facts):
    with current_app.connection_for_write() as conn:
        channel = conn.channel()
        channel.basic_consume("default", callback=lambda message: None)
        broker_cache.clear()
        sentence = explain.job_explain(make_job("jobs.noop", status=JobStatus.QUEUED))
        channel.close()
    assert sentence.endswith("and 1 consumer on default.")


def test_a_pending_job_names_the_relay_run_or_the_unreachable_broker(fresh_broker_facts, settings):
    job = make_job("jobs.noop", status=JobStatus.PENDING)
    assert "the outbox relay has never run: is beat running" in explain.job_explain(job)

    every = IntervalSchedule.objects.create(every=10, period=IntervalSchedule.SECONDS)
    last = timezone.now() - timedelta(seconds=4)
    PeriodicTask.objects.create(name="jobs-relay-outbox", task="jobs.relay_outbox", interval=every, last_run_at=last)
    sentence = explain.job_explain(job)
    assert "the outbox relay last ran at " + timezone.localtime(last).strftime("%H:%M:%S") in sentence
    assert "runs next at " + timezone.localtime(last + timedelta(seconds=10)).strftime("%H:%M:%S") in sentence

    current_app.conf.broker_read_url = "amqp://guest:guest@127.0.0.1:1//"
    try:
        broker_cache.clear()
        assert "the broker is unreachable now" in explain.job_explain(job)
    finally:
        current_app.conf.broker_read_url = None


def test_countdown_retrying_and_started_sentences(fresh_broker_facts):
    now = timezone.now()
    later = make_job("jobs.noop", status=JobStatus.QUEUED, eta=now + timedelta(seconds=90))
    retrying = make_job(
        "jobs.noop", status=JobStatus.RETRYING, attempts=3, started_at=now, error="TransientError: SMTP said 421"
    )
    started = make_job("jobs.sleep", status=JobStatus.STARTED, started_at=now - timedelta(seconds=5), worker="w1@host")

    assert explain.job_explain(later, now).startswith("QUEUED, held until its countdown at ")
    assert explain.job_explain(retrying, now) == (
        f"RETRYING, attempt 3 of 6 failed; next at {timezone.localtime(now + timedelta(seconds=4)):%H:%M:%S} at the "
        "latest, after error: TransientError: SMTP said 421."
    )
    assert explain.job_explain(started, now) == (
        f"STARTED on worker w1@host for 5 s; its hard time limit stops it at "
        f"{timezone.localtime(now + timedelta(seconds=85)):%H:%M:%S}."
    )
    assert explain.job_explain(make_job("jobs.noop", status=JobStatus.SUCCESS)) is None


def test_the_job_page_and_the_api_say_why(admin_client, fresh_broker_facts):
    job = make_job("jobs.noop", status=JobStatus.QUEUED)

    page = admin_client.get(reverse("admin:jobs_job_change", args=[job.pk])).content.decode()
    body = admin_client.get(f"/api/jobs/{job.pk}/").json()

    assert "no worker consumes queue default" in page
    assert "no worker consumes queue default" in body["explanation"]


def test_the_job_page_links_to_its_image_and_to_flower(admin_client, settings):
    from media_tasks.models import Image

    settings.FLOWER_URL = "http://flower.example:5555/"
    job = make_job("jobs.noop", status=JobStatus.SUCCESS)
    image = Image.objects.create(original="originals/x.jpg", original_name="x.jpg", job=job)

    html = admin_client.get(reverse("admin:jobs_job_change", args=[job.pk])).content.decode()

    assert f'href="{reverse("admin:media_tasks_image_change", args=[image.pk])}" class="job-link">image ' in html
    assert f'href="http://flower.example:5555/task/{job.pk}" class="job-link">Flower</a>' in html


def test_a_retrying_mail_job_says_until_when_mail_is_rate_limited(fresh_broker_facts, settings):
    from mail_tasks.models import RateBucket
    from mail_tasks.ratelimit import GLOBAL_KEY

    settings.MAIL_RATE_PER_SECOND = 1
    now = timezone.now()
    RateBucket.objects.create(key=GLOBAL_KEY, tat=(now + timedelta(seconds=20)).timestamp())
    job = make_job("mail_tasks.message_send", 1, status=JobStatus.RETRYING, attempts=1, started_at=now)

    sentence = explain.job_explain(job, now)

    assert sentence.endswith(f"Mail is rate-limited until {timezone.localtime(now + timedelta(seconds=20)):%H:%M:%S}.")


def test_image_and_report_lists_name_job_statuses_as_the_job_admin_does(admin_client):
    from media_tasks.models import Image

    broken = Image.objects.create(original="originals/a.jpg", job=make_job("jobs.noop", status=JobStatus.FAILURE))
    Image.objects.create(original="originals/b.jpg", job=make_job("jobs.noop", status=JobStatus.SUCCESS))
    for url in (reverse("admin:media_tasks_image_changelist"), reverse("admin:reports_reportrun_changelist")):
        html = admin_client.get(url).content.decode()
        assert 'title="Cancelled">REVOKED</a>' in html and ">Cancelled</a>" not in html
    failed_images = admin_client.get(reverse("admin:media_tasks_image_changelist"), {"job_status": "FAILURE"})
    assert listed(failed_images) == {broken.pk}


def test_selecting_a_job_and_its_retry_retries_their_latest_attempt_once(admin_client):
    original = make_job(status=JobStatus.FAILURE, error="RuntimeError: x")
    admin_client.post(reverse("admin:jobs_job_retry", args=[original.pk]))
    first = Job.objects.get(retry_of=original)
    Job.objects.filter(pk=first.pk).update(status=JobStatus.FAILURE)

    response = admin_client.post(
        f"{CHANGELIST}?superseded=show",
        {"action": "retry_selected", "_selected_action": [str(original.pk), str(first.pk)]},
        follow=True,
    )

    assert Job.objects.filter(retry_of=first).count() == 1
    assert Job.objects.filter(retry_of=original).count() == 1
    assert shown_messages(response)[-2:] == [
        "Retried 1 job.",
        "Skipped 1 job: only failed, cancelled, dead or lost jobs can be retried "
        f"(1 because its latest attempt {str(first.pk)[:8]} was already being retried).",
    ]
