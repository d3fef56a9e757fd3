"""The worker's main process sends its batches of ends without waiting for
the answer (jobs/loop_statement.py), on a connection of its own: the answer
is read from the event loop, or waited for when asked."""

import pytest
from django.db import DatabaseError, OperationalError, connection
from kombu.asynchronous import Hub

from jobs.loop_statement import LoopStatement
from jobs.models import Job, JobStatus
from tests.helpers import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def _progress(job: Job) -> int:
    job.refresh_from_db()
    return job.progress


def _set_progress(job: Job, value: int) -> tuple[str, list]:
    return "UPDATE jobs_job SET progress = %s WHERE id = %b", [value, job.id]


@pytest.fixture
def statement():
    statement = LoopStatement("default")
    yield statement
    statement.close()


@pytest.fixture
def hub():
    hub = Hub()
    yield hub
    hub.close()


def _run_loop_until(hub: Hub, done, turns: int = 50) -> None:
    loop = hub.create_loop()
    for _ in range(turns):
        if done():
            return
        next(loop)
    raise AssertionError("the loop never delivered the answer")


def test_a_statement_is_answered_through_the_event_loop_not_at_sending(statement, hub):
    job = Job.objects.create(task_name="jobs.noop", status=JobStatus.QUEUED)
    outcomes = []
    # pg_sleep: the answer cannot be there yet when send() returns.
    sql, params = "UPDATE jobs_job SET progress = %s FROM pg_sleep(0.2) WHERE id = %b", [7, job.id]

    statement.send(sql, params, outcomes.append, hub=hub)

    assert statement.busy and outcomes == []
    _run_loop_until(hub, lambda: outcomes)
    assert outcomes == [None]
    assert not statement.busy
    assert _progress(job) == 7


def test_wait_blocks_until_the_answer_and_the_same_shape_runs_again_prepared(statement):
    job = Job.objects.create(task_name="jobs.noop", status=JobStatus.QUEUED)
    outcomes = []
    for value in (3, 4, 5):
        statement.send(*_set_progress(job, value), outcomes.append)
        statement.wait()
        assert _progress(job) == value
    assert outcomes == [None, None, None]
    assert len(statement.prepared) == 1


def test_a_statement_the_server_refuses_gives_its_error_and_the_next_one_runs(statement):
    job = Job.objects.create(task_name="jobs.noop", status=JobStatus.QUEUED)
    outcomes = []
    # The table's check constraint: progress is at most 100.
    statement.send(*_set_progress(job, 101), outcomes.append)
    statement.wait()
    assert len(outcomes) == 1 and isinstance(outcomes[0], DatabaseError)
    assert "job_progress_percent" in str(outcomes[0])

    statement.send(*_set_progress(job, 42), outcomes.append)
    statement.wait()
    assert outcomes[1] is None
    assert _progress(job) == 42


def _terminate_its_backend(statement: LoopStatement, *, wait: bool = False) -> None:
    """As a database restart or failover ends a connection; with `wait`,
    return once the server process has gone (it closed the socket)."""
    pid = statement.wrapper.connection.info.backend_pid
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [pid])

        def gone() -> bool:
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [pid])
            return cursor.fetchone()[0] == 0

        if wait:
            wait_for(gone, timeout=10, what="the terminated server process to exit")


def test_a_connection_the_server_dropped_while_idle_is_replaced_at_the_next_send(statement):
    job = Job.objects.create(task_name="jobs.noop", status=JobStatus.QUEUED)
    outcomes = []
    statement.send(*_set_progress(job, 1), outcomes.append)
    statement.wait()
    first = statement.wrapper.connection.info.backend_pid

    _terminate_its_backend(statement, wait=True)
    statement.send(*_set_progress(job, 2), outcomes.append)
    statement.wait()

    assert outcomes == [None, None]
    assert statement.wrapper.connection.info.backend_pid != first
    assert _progress(job) == 2


def test_a_connection_lost_with_a_statement_in_flight_says_so_and_the_next_send_reconnects(statement, hub):
    job = Job.objects.create(task_name="jobs.noop", status=JobStatus.QUEUED)
    outcomes = []
    statement.send("SELECT pg_sleep(30)", [], outcomes.append, hub=hub)
    _terminate_its_backend(statement)

    _run_loop_until(hub, lambda: outcomes)
    assert len(outcomes) == 1 and isinstance(outcomes[0], OperationalError)
    assert statement.wrapper is None and not hub.readers

    statement.send(*_set_progress(job, 9), outcomes.append, hub=hub)
    _run_loop_until(hub, lambda: len(outcomes) == 2)
    assert outcomes[1] is None and _progress(job) == 9


def test_a_second_statement_is_refused_while_one_is_in_flight(statement):
    job = Job.objects.create(task_name="jobs.noop", status=JobStatus.QUEUED)
    statement.send(*_set_progress(job, 1), lambda error: None)
    with pytest.raises(RuntimeError, match="in flight"):
        statement.send(*_set_progress(job, 2), lambda error: None)
    statement.wait()
