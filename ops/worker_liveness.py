"""A file the worker touches from its own event loop, for a liveness probe
that costs nothing (Kubernetes: deploy/kubernetes/).

Asking a worker whether it lives with `celery inspect ping` starts a Python
interpreter and sends a message through the broker to every worker's
control queue on every probe. Instead, when KIT_WORKER_LIVENESS_FILE is set,
the worker's timer (driven by the loop that also consumes messages) touches
that file every TOUCH_SECONDS; a probe compares its age with a shell's
`stat` and `date`. A worker whose loop hangs stops touching it, and the
probe fails. Unset (compose, development), nothing is written.
"""

import os
from pathlib import Path

from celery import bootsteps

ENV = "KIT_WORKER_LIVENESS_FILE"
TOUCH_SECONDS = 10


class LivenessFile(bootsteps.StartStopStep):
    requires = {"celery.worker.components:Timer"}

    def __init__(self, worker, **kwargs):
        super().__init__(worker, **kwargs)
        path = os.environ.get(ENV, "").strip()
        self.path = Path(path) if path else None
        self.timer_entry = None

    def start(self, worker):
        if self.path is None:
            return
        self.touch()
        self.timer_entry = worker.timer.call_repeatedly(TOUCH_SECONDS, self.touch)

    def stop(self, worker):
        if self.timer_entry is not None:
            self.timer_entry.cancel()
            self.timer_entry = None

    def touch(self):
        self.path.touch()
