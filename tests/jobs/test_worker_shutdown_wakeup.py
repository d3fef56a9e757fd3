"""An idle worker begins its shutdown at once (jobs.worker_consumer): Celery's
shutdown handlers only set a flag the event loop reads when its poll
returns, and the worker_shutting_down signal they send makes the poll
return, through a pipe the loop watches."""

import os
import signal
import socket

from celery import signals
from kombu.asynchronous import Hub

from jobs import worker_consumer


def test_the_shutdown_signal_makes_an_idle_loops_poll_return(monkeypatch):
    wakeup = worker_consumer._ShutdownWakeup()
    monkeypatch.setattr(worker_consumer, "_shutdown_wakeup", wakeup)
    hub = Hub()
    fired = []
    # An idle worker's loop: a connection with nothing to read, the next timer far off.
    broker, broker_end = socket.socketpair()
    hub.add_reader(broker, fired.append, "broker")
    hub.call_later(30, fired.append, "timer")
    wakeup.follow(hub)
    loop = hub.create_loop()
    # As Celery's SIGTERM handler does, from a signal interrupting the poll.
    previous = signal.signal(
        signal.SIGALRM, lambda *_: signals.worker_shutting_down.send(sender="test", sig="SIGTERM", how="Warm")
    )
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        next(loop)  # polls until something is readable, or for up to the timer
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        hub.close()
        broker.close()
        broker_end.close()

    # The loop came back for the pipe (which it drained), not for the timer.
    assert fired == []
    try:
        leftover = os.read(wakeup.read_end, 1)
    except BlockingIOError:
        leftover = b""
    assert leftover == b""


def test_a_wakeup_outside_the_process_that_made_it_writes_nothing(monkeypatch):
    wakeup = worker_consumer._ShutdownWakeup()
    monkeypatch.setattr(wakeup, "pid", os.getpid() + 1)  # as in a forked pool child

    wakeup.wake()

    try:
        written = os.read(wakeup.read_end, 1)
    except BlockingIOError:
        written = b""
    assert written == b""
