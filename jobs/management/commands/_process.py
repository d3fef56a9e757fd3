"""Child processes that start and stop together (`manage.py up`).

Not a command: Django skips modules whose names start with an underscore.
"""

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

# After SIGKILL, how long to wait for the kernel to take a process group down.
KILL_WAIT_SECONDS = 5


class Child:
    """One program, started in a session of its own.

    Its own session: the terminal's Ctrl-C reaches only the supervisor, which
    stops the children in order. Its own process group: everything it starts
    (a reloader's child, a worker's pool) is in the group, so when the group
    is empty the child has left nothing behind.
    """

    def __init__(self, name: str, argv: list[str]):
        self.name = name
        self.argv = argv
        self.process: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None

    def start(self, *, env: dict, cwd: Path, write: Callable[[str, str], None]) -> "Child":
        self.process = subprocess.Popen(
            self.argv,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._forward, args=(write,), name=f"output-{self.name}", daemon=True)
        self._reader.start()
        return self

    def _forward(self, write: Callable[[str, str], None]) -> None:
        for raw in self.process.stdout:
            write(self.name, raw.decode(errors="replace").rstrip("\r\n"))

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.poll()

    def exited(self) -> bool:
        return self.process.poll() is not None

    def running(self) -> bool:
        """Whether any process of this child's group is still there."""
        self.process.poll()  # reap the leader, or its zombie counts as running
        try:
            os.killpg(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # a process of the group changed user: still there
            return True
        return True

    def terminate(self) -> None:
        """Ask to stop: SIGTERM to the program we started, which stops what it
        started itself; to the whole group if that program is already gone."""
        try:
            if not self.exited():
                self.process.send_signal(signal.SIGTERM)
            else:
                os.killpg(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def close(self, timeout: float = 2) -> None:
        """Let the last lines of output through, then release the pipe."""
        if self._reader is not None:
            self._reader.join(timeout)
        self.process.stdout.close()


class Children:
    """The programs one supervisor runs: started one by one, watched, and
    stopped together."""

    def __init__(self, *, env: dict, cwd: Path, write: Callable[[str, str], None]):
        self.env = env
        self.cwd = cwd
        self.write = write
        self.started: list[Child] = []

    def start(self, name: str, argv: list[str]) -> Child:
        child = Child(name, argv).start(env=self.env, cwd=self.cwd, write=self.write)
        self.started.append(child)
        return child

    def first_exited(self) -> Child | None:
        return next((child for child in self.started if child.exited()), None)

    def stop(self, *, grace: float, hurry: threading.Event) -> list[Child]:
        """SIGTERM to every child; SIGKILL to the process group of each one
        still running after `grace` seconds, or as soon as `hurry` is set.
        Returns the children that had to be killed."""
        for child in self.started:
            child.terminate()
        deadline = time.monotonic() + grace
        while self._running(self.started) and time.monotonic() < deadline and not hurry.is_set():
            hurry.wait(0.1)
        killed = self._running(self.started)
        for child in killed:
            child.kill()
        deadline = time.monotonic() + KILL_WAIT_SECONDS
        while self._running(killed) and time.monotonic() < deadline:
            time.sleep(0.05)
        for child in self.started:
            child.close()
        return killed

    @staticmethod
    def _running(children: Iterable[Child]) -> list[Child]:
        return [child for child in children if child.running()]


class StopSignals:
    """SIGINT (Ctrl-C) and SIGTERM while in the `with` block: the first one
    sets `stop`, any further one sets `hurry`."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.stop = threading.Event()
        self.hurry = threading.Event()
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "StopSignals":
        for signum in self.SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum, frame) -> None:
        (self.hurry if self.stop.is_set() else self.stop).set()
