"""Running Celery's own programs (worker, beat, flower) inside a management
command, and restarting the worker when the code changes (development).

Not a command: Django skips modules whose names start with an underscore.
"""

import os
import signal
import subprocess
import threading
from collections.abc import Callable

import click
from celery import current_app
from django.core.management.base import CommandError
from django.utils import autoreload

# The fd of a pipe whose other end only the worker's reloader holds (see
# WorkerReloader.run_worker); the worker stops when the reloader goes away.
LIFELINE_ENV = "KIT_WORKER_LIFELINE_FD"


def celery_run(argv: list[str], *, quiet: bool = False) -> int:
    """Run `celery -A config <argv>` in this process; return its exit code.
    `quiet`: without Celery's start-up banner (`celery --quiet`).

    The same program as the `celery` script, called in-process so the
    management command is the process a supervisor signals: SIGTERM reaches
    Celery's own handlers (warm shutdown for the worker, a final sync for beat).
    """
    from celery.bin.celery import celery as celery_program

    try:
        args = ["-A", "config", *(["--quiet"] if quiet else []), *argv]
        code = celery_program.main(args=args, prog_name="celery", standalone_mode=False)
    except click.exceptions.Abort:
        # Ctrl-C before the program installed its own handlers: a stop asked for.
        return 0
    except click.ClickException as exc:
        raise CommandError(f"celery {argv[0]}: {exc.format_message()}") from None
    return code if isinstance(code, int) else 0


def stop_with_lifeline() -> None:
    """In a worker started by WorkerReloader: shut down warmly (SIGTERM to
    ourselves) as soon as the reloader is gone, however it went (Ctrl-C,
    SIGTERM, SIGKILL), so no worker outlives it."""
    fd = os.environ.pop(LIFELINE_ENV, None)
    if fd is None:
        return

    def wait_for_eof() -> None:
        try:
            while os.read(int(fd), 1):
                pass
        except OSError:
            pass
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=wait_for_eof, name="reloader-lifeline", daemon=True).start()


class WorkerReloader:
    """Run `command` (the worker with --no-autoreload) and start it afresh
    whenever a Python file the worker uses changes.

    Django's reloader runs the calling command twice: a parent that restarts a
    child whenever the child exits with code 3, and the child, which watches
    files in its main thread and runs `run_worker` in another. A Celery worker
    needs the main thread of its own process (signal handlers) and must not
    fork its pool from a side thread, so the child runs the worker as a
    subprocess and stops it, warmly, before every restart.
    """

    def __init__(self, command: list[str], *, notify: Callable[[str], None], stop_timeout: float = 30):
        self.command = command
        self.notify = notify
        self.stop_timeout = stop_timeout
        self.process: subprocess.Popen | None = None
        # The write end of the worker's lifeline: never written, only held.
        # The OS closes it when this process ends, however it ends.
        self.lifeline: int | None = None
        self.stopping = False
        # run_worker (a side thread) and stop_worker (the main thread, on a
        # reload or a signal) may overlap: never start a worker after a stop.
        self.lock = threading.Lock()

    def run(self) -> None:
        if os.environ.get(autoreload.DJANGO_AUTORELOAD_ENV) != "true":
            # The parent: the child already gets the terminal's Ctrl-C and stops
            # the worker; a KeyboardInterrupt here would kill the child at once.
            signal.signal(signal.SIGINT, lambda signum, frame: None)
        try:
            autoreload.run_with_reloader(self.run_worker)
        finally:
            self.stop_worker()

    def run_worker(self) -> None:
        # The reloader watches the modules this process imported: import the
        # tasks modules the worker will run, so editing one restarts it.
        current_app.loader.import_default_modules()
        read_end, self.lifeline = os.pipe()
        env = {name: value for name, value in os.environ.items() if name != autoreload.DJANGO_AUTORELOAD_ENV}
        env[LIFELINE_ENV] = str(read_end)
        with self.lock:
            if self.stopping:
                return
            self.process = subprocess.Popen(self.command, env=env, pass_fds=(read_end,), stdin=subprocess.DEVNULL)
        os.close(read_end)
        code = self.process.wait()
        if not self.stopping:
            self.notify(f"Worker exited with code {code}; it starts again when a .py file changes.")

    def stop_worker(self) -> None:
        """Warm shutdown (SIGTERM), then SIGKILL after `stop_timeout` seconds
        (the prefork pool dies with its parent: Celery sets PDEATHSIG)."""
        with self.lock:
            self.stopping = True
            process = self.process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(self.stop_timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
