"""A PostgreSQL cluster of the suite's own, for faults that take the database down.

Other test runs share the machine's PostgreSQL (port 5432), so it is never
stopped here: like the broker-restart tests' RabbitMQ node (conftest.py),
the database-restart tests `initdb` a cluster into a temporary folder, run it
on a free loopback port (trust auth, its socket in that folder) with a
database `kit` migrated to the current schema, stop and start *it*, and stop
it at the end of the session. A cluster that cannot start fails the tests
that need it.
"""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.helpers import REPO, free_port

DATABASE = "kit"


def _bin_dir() -> Path:
    # Debian installs each major version side by side; use the newest.
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[-3]))
    assert versions, "no PostgreSQL server binaries under /usr/lib/postgresql (apt-get install postgresql)"
    return versions[-1].parent


class FaultPostgres:
    def __init__(self, base: Path):
        self.base = base
        self.data = base / "data"
        self.log = base / "postgres.log"
        self.port = free_port()
        self.bin = _bin_dir()
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/{DATABASE}"

    def _run(self, program: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        command = [str(self.bin / program), *args]
        if os.geteuid() == 0:
            # initdb and postgres refuse to run as root.
            command = ["runuser", "-u", "postgres", "--", *command]
        # cwd: the postgres user may not be allowed into the caller's folder.
        return subprocess.run(command, cwd=self.base, capture_output=True, text=True, timeout=timeout, check=False)

    def _check(self, done: subprocess.CompletedProcess) -> None:
        log = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
        assert done.returncode == 0, f"{done.args}: {done.stdout}{done.stderr}\n--- {self.log}:\n{log}"

    def initdb(self) -> None:
        # --no-sync and fsync=off (in start): nothing here has to survive a
        # crash of the machine, only restarts of the server.
        done = self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")
        self._check(done)

    def start(self) -> None:
        if self.is_running():
            return
        options = f"-k {self.base} -p {self.port} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._check(self._run("pg_ctl", "start", "-D", str(self.data), "-l", str(self.log), "-w", "-o", options))

    def stop(self, mode: str = "fast") -> None:
        """`fast` disconnects every client and shuts down cleanly; `immediate`
        is a crash (recovery from the WAL at the next start)."""
        self._check(self._run("pg_ctl", "stop", "-D", str(self.data), "-m", mode, "-w"))

    def is_running(self) -> bool:
        return self._run("pg_ctl", "status", "-D", str(self.data)).returncode == 0

    def create_database(self) -> None:
        self._check(self._run("createdb", "-h", str(self.base), "-p", str(self.port), "-U", "postgres", DATABASE))
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test", "DATABASE_URL": self.url}
        migrated = subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert migrated.returncode == 0, f"migrate on {self.url} failed:\n{migrated.stdout}{migrated.stderr}"


@pytest.fixture(scope="session")
def fault_postgres(real_services):
    """A running cluster of the suite's own with the kit's schema in `.url`;
    `.stop()` and `.start()` it."""
    base = Path(tempfile.mkdtemp(prefix="kitfault-pg-"))
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
    node = FaultPostgres(base)
    try:
        node.initdb()
        node.start()
        node.create_database()
        yield node
    finally:
        if node.data.exists():
            node._run("pg_ctl", "stop", "-D", str(node.data), "-m", "immediate", "-w")
        shutil.rmtree(base, ignore_errors=True)
