"""apply_async and beat options on kit tasks are honoured or refused
loudly, never dropped; chains, groups and chords of kit tasks are refused
(they would run untracked); a public task's arguments are bounded."""

import json

import pytest
from celery import chain, chord, current_app, group
from celery.beat import ScheduleEntry, Scheduler, SchedulingError
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from jobs.exceptions import UnsupportedOption
from jobs.models import Job
from jobs.tasks import noop, sleep

pytestmark = pytest.mark.integration


def messages_in(queue: str) -> int:
    with current_app.connection_for_write() as conn:
        return conn.default_channel.queue_declare(queue, passive=True).message_count


@pytest.mark.parametrize(
    ("options", "priority", "queue"),
    [
        ({"priority": 9}, "high", "default"),
        ({"priority": 0}, "low", "default"),
        ({"priority": 4}, "medium", "default"),
        ({"priority": "low", "queue": "email"}, "low", "email"),
        ({"queue": current_app.amqp.queues["reports"]}, "medium", "reports"),
        ({"countdown": 1, "producer": None, "retry": True}, "medium", "default"),
    ],
)
def test_apply_async_options_are_honoured_on_the_job_and_the_broker(broker, transactional_db, options, priority, queue):
    result = noop.apply_async(**options)

    job = Job.objects.get(pk=result.id)
    assert (job.priority, job.queue) == (priority, queue)
    assert messages_in(queue) == 1, "the message did not go to the queue asked for"
    if "countdown" in options:
        assert job.eta is not None


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"expires": 60}, "expires=60 cannot be honoured"),
        ({"time_limit": 5}, "time_limit=5 cannot be honoured"),
        ({"exchange": "elsewhere"}, "exchange='elsewhere'"),
        ({"headers": {"tenant": 3}}, "headers ['tenant']"),
        ({"priority": 42}, "priority=42"),
        ({"priority": "urgent"}, "priority='urgent'"),
        ({"queue": "celery"}, "queue='celery' is not a kit queue"),
        ({"serializer": "pickle"}, "serializer='pickle'"),
        ({"link": noop.si()}, "chains, groups and chords"),
    ],
)
def test_an_option_the_kit_cannot_honour_is_refused_loudly(broker, transactional_db, options, says):
    with pytest.raises(UnsupportedOption, match=None) as refused:
        noop.apply_async(**options)

    assert says in str(refused.value)
    assert not Job.objects.exists()


@pytest.mark.parametrize(
    "canvas",
    [
        lambda: chain(noop.si(), noop.si()),
        lambda: group(noop.si(), noop.si()),
        lambda: chord([noop.si(), noop.si()], noop.si()),
        lambda: noop.si().set(task_id="3f1e6a40-0000-4000-8000-000000000001"),
    ],
    ids=["chain", "group", "chord", "own task id"],
)
def test_chains_groups_and_chords_of_kit_tasks_are_refused(broker, transactional_db, canvas):
    with pytest.raises(UnsupportedOption, match="chains, groups and chords"):
        canvas().apply_async()

    assert not Job.objects.exists()
    assert messages_in("default") == 0


def test_beat_options_are_honoured_and_a_bad_one_is_refused(broker, transactional_db):
    scheduler = Scheduler(app=current_app, lazy=True)
    honoured = ScheduleEntry(
        name="nightly", task=noop.name, schedule=60, options={"priority": 9, "queue": "email"}, app=current_app
    )
    scheduler.apply_async(honoured, advance=False)
    job = Job.objects.get()
    assert (job.priority, job.queue) == ("high", "email")

    refused = ScheduleEntry(name="expiring", task=noop.name, schedule=60, options={"expires": 30}, app=current_app)
    with pytest.raises(SchedulingError, match="expires=30 cannot be honoured"):
        scheduler.apply_async(refused, advance=False)
    assert Job.objects.count() == 1


@pytest.mark.parametrize(
    ("call", "says"),
    [
        ({"kwargs": {"seconds": 10**9}}, "seconds must be a number from 0 to 30"),
        ({"args": [-1]}, "seconds must be a number from 0 to 30"),
        ({"args": ["1"]}, "seconds must be a number"),
        ({"kwargs": {"seconds": 1, "steps": 10**7}}, "steps must be a whole number from 1 to 100"),
    ],
)
def test_a_public_tasks_unbounded_arguments_are_a_400_alone_and_in_bulk(transactional_db, call, says):
    client = APIClient()
    client.force_authenticate(User.objects.create_superuser("root", "root@example.com", "pw"))

    single = client.post("/api/jobs/", json.dumps({"task": "jobs.sleep", **call}), content_type="application/json")
    bulk = client.post(
        "/api/jobs/bulk/",
        json.dumps({"task": "jobs.sleep", "calls": [{"args": [0.1]}] * 9_999 + [call]}),
        content_type="application/json",
    )

    assert single.status_code == bulk.status_code == 400
    assert says in json.dumps(single.json())
    assert "calls[9999]" in json.dumps(bulk.json()) and says in json.dumps(bulk.json())
    assert not Job.objects.exists()


def test_an_unbounded_sleep_enqueued_from_code_fails_its_job_without_running(broker, start_worker):
    from tests.helpers import wait_for

    job_id = sleep.apply_async(kwargs={"seconds": 86_400}).id
    start_worker()

    wait_for(lambda: Job.objects.get(pk=job_id).status == "FAILURE", what="the oversized sleep to fail")
    assert "seconds must be a number from 0 to 30" in Job.objects.get(pk=job_id).error
