import os
import time

from django.apps import AppConfig


class PeersAppConfig(AppConfig):
    # An app so that Procrastinate finds the task in its tasks module.
    name = "bench.peers_app"
    label = "bench_peers"

    def ready(self) -> None:
        # django-q2 stamps a task's "started" when it is enqueued, not when
        # a worker starts it, so its window would include the enqueueing and
        # the workers' idle wait: each worker process notes when it starts
        # its first task instead (bench/peers_app/run.py, DjangoQ2.seconds).
        if path := os.environ.get("BENCH_PEERS_FIRST_STARTS"):
            from django_q.signals import pre_execute

            pre_execute.connect(_FirstStart(path), weak=False, dispatch_uid="bench-peers-first-start")


class _FirstStart:
    """A pre_execute receiver that appends the time of this process's first
    task to a file, once, so that no other task pays for it."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.recorded_in = None

    def __call__(self, sender, **kwargs) -> None:
        if self.recorded_in != os.getpid():
            self.recorded_in = os.getpid()
            with open(self.path, "a") as stamps:
                stamps.write(f"{time.time()}\n")
