"""Dramatiq's no-op actor on RabbitMQ, with no results middleware: the
untracked reference among the peers. `dramatiq bench.peers_app.dramatiq_actors`
runs it.

Two bench-only middlewares, the only additions to Dramatiq's defaults:
- a gate: each worker process imports, connects and forks, then waits for
  BENCH_GATE_FILE before it starts consuming, so that, as for the kit's
  parked Celery worker, start-up stays out of the CPU measurement;
- stamps: Dramatiq stores nothing, so each message's start and end are
  appended to BENCH_STAMP_FILE (as bench/tasks.py does for bare Celery).
"""

import os
import time

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.middleware import Middleware

QUEUE = "bench-dramatiq"


class _Gate(Middleware):
    def before_worker_boot(self, broker, worker) -> None:
        gate = os.environ.get("BENCH_GATE_FILE")
        while gate and not os.path.exists(gate):
            time.sleep(0.01)


class _Stamps(Middleware):
    def __init__(self) -> None:
        self.path = os.environ.get("BENCH_STAMP_FILE")
        self.fd = None
        self.started: dict[str, float] = {}

    def before_process_message(self, broker, message) -> None:
        self.started[message.message_id] = time.time()

    def after_process_message(self, broker, message, *, result=None, exception=None) -> None:
        started = self.started.pop(message.message_id, None)
        if self.path and started is not None:
            if self.fd is None:
                self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            # One write per line with O_APPEND: lines from the threads and
            # processes never interleave.
            os.write(self.fd, f"{started:.6f} {time.time():.6f}\n".encode())


broker = RabbitmqBroker(url=os.environ.get("BENCH_PEERS_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/kit-bench-peers"))
broker.add_middleware(_Gate())
broker.add_middleware(_Stamps())
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name=QUEUE)
def noop() -> None:
    """Does nothing."""
