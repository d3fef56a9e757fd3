"""Messages nobody should be able to run, published straight to the queue."""

import pickle
import uuid
from pathlib import Path

import pytest
from celery import current_app

from jobs.models import Job, JobStatus
from jobs.services import enqueue
from tests.helpers import wait_for

pytestmark = pytest.mark.integration


class TouchOnUnpickle:
    """Unpickling this creates a file: proof that pickle was executed."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_a_pickle_message_on_the_queue_is_refused_not_executed(start_worker, tmp_path):
    evidence = tmp_path / "pickle-was-executed"
    worker = start_worker()
    task_id = str(uuid.uuid4())
    with current_app.producer_or_acquire() as producer:
        producer.publish(
            pickle.dumps(((TouchOnUnpickle(evidence),), {}, {})),
            exchange="kit",
            routing_key="default",
            content_type="application/x-python-serialize",
            content_encoding="binary",
            headers={"task": "jobs.noop", "id": task_id, "lang": "py", "argsrepr": "()", "kwargsrepr": "{}"},
        )
    after = enqueue("jobs.noop")

    wait_for(lambda: Job.objects.get(pk=after.pk).status == JobStatus.SUCCESS, what="the next job to run")
    assert not evidence.exists()
    assert "Refusing to deserialize untrusted content of type pickle" in worker.read_log()
