"""One beat per deployment, enforced by the database: a PostgreSQL
session advisory lock that the beat process holds for as long as it runs.

Two beats send every periodic task twice (two relays, two prunes, two
scheduled reports). A PID file only guards one machine, and two beats with
different state directories (two containers, two pods during a rollout)
never see each other's. Every beat reaches the same database, so the lock
lives there: a second beat waits as a standby, sending nothing, and takes
over within `poll_seconds` of the first one's end (its session ends with
its process, however it ends, and PostgreSQL releases the lock).

If the lock's connection is lost (PostgreSQL restarted, a network cut),
the lock may already belong to another beat, so this one stops (SIGTERM to
itself: Celery beat's own clean exit) and its supervisor starts it again,
to wait for the lock like any newcomer.

Session advisory locks need a session of their own: point beat at
PostgreSQL directly, not through a pooler in transaction mode. SQLite (the
embedded default, one machine) has no such lock; the PID file guards it.
"""

import logging
import os
import signal
import threading
import time
import zlib
from collections.abc import Callable

from django.db import connections

logger = logging.getLogger(__name__)

# Advisory lock keys are per database; one fixed 32-bit key for "the beat".
LOCK_KEY = zlib.crc32(b"kit.beat.schedule")


class BeatLock:
    def __init__(self, alias: str = "default", *, poll_seconds: float = 5):
        self.alias = alias
        self.poll_seconds = poll_seconds
        self.connection = None
        self._stop = threading.Event()

    @property
    def supported(self) -> bool:
        return connections[self.alias].vendor == "postgresql"

    def acquire(self, *, notify: Callable[[str], None] = logger.info) -> None:
        """Block until this process holds the lock (at once if no other beat
        runs). A connection of its own, outside Django's per-thread ones,
        which the scheduler closes and reopens at will."""
        if not self.supported:
            return
        told = False
        while True:
            if self.connection is None:
                self.connection = connections.create_connection(self.alias)
                # Used by this thread, then by the watch's thread, never both at once.
                self.connection.inc_thread_sharing()
            with self.connection.cursor() as cursor:
                cursor.execute("SELECT pg_try_advisory_lock(%s)", [LOCK_KEY])
                if cursor.fetchone()[0]:
                    notify("Beat holds the schedule lock: it is the one beat sending periodic tasks.")
                    return
            if not told:
                notify(
                    "Another beat holds the schedule lock: standing by, sending nothing, "
                    f"and asking again every {self.poll_seconds:g} s."
                )
                told = True
            time.sleep(self.poll_seconds)

    def holds(self) -> bool:
        """Whether this process's session still holds the lock."""
        try:
            with self.connection.cursor() as cursor:
                cursor.execute(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() "
                    "AND objid = %s AND granted",
                    [LOCK_KEY],
                )
                return cursor.fetchone()[0] > 0
        except Exception:  # any failure of the session means the lock is gone with it
            logger.warning("The beat lock's database session failed.", exc_info=True)
            return False

    def watch(self, on_lost: Callable[[], None] | None = None) -> None:
        """Check the lock every `poll_seconds` in a daemon thread; call
        `on_lost` (default: stop this process warmly) when it is gone."""
        if not self.supported:
            return
        on_lost = on_lost or (lambda: os.kill(os.getpid(), signal.SIGTERM))

        def check() -> None:
            while not self._stop.wait(self.poll_seconds):
                if not self.holds():
                    logger.error("Beat lost its schedule lock: stopping, so that two beats never run at once.")
                    on_lost()
                    return

        threading.Thread(target=check, name="beat-lock-watch", daemon=True).start()

    def release(self) -> None:
        self._stop.set()
        if self.connection is not None:
            try:
                self.connection.close()  # ends the session: PostgreSQL frees the lock
            finally:
                self.connection = None
