"""Access in the embedded default, as a first run (`make run`, i.e.
`manage.py up`) does it with nothing set: Flower asks for a login that `up`
generated and printed once, refuses foreign Host headers, and var/ (the
SQLite database with sessions and tokens, broker messages, Flower's login)
is readable by its owner only."""

import os
import signal
import stat
import subprocess

import pytest

from tests.embedded_stack import NOT_INHERITED, STOP_TIMEOUT, Up, http, processes_with
from tests.helpers import free_port, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def bare_first_run(tmp_path):
    """A var directory that has never seen the kit, and a person who has set
    nothing at all, Flower's login included."""
    var_dir = tmp_path / "var"
    env = {name: value for name, value in os.environ.items() if name not in NOT_INHERITED}
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings.local",
        KIT_VAR_DIR=str(var_dir),
        EMAIL_PORT=str(free_port()),
        PYTHONUNBUFFERED="1",
    )
    yield var_dir, env
    for pid in processes_with(f"KIT_VAR_DIR={var_dir}".encode()):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def stop(up: Up) -> None:
    up.process.send_signal(signal.SIGINT)
    try:
        up.process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        up.process.kill()
    up.reader.join(5)


def test_make_run_prints_a_generated_flower_login_once_and_keeps_var_private(bare_first_run):
    var_dir, env = bare_first_run
    up = Up(env, port=free_port(), flower_port=free_port()).start()
    flower = f"http://127.0.0.1:{up.flower_port}"
    try:
        line = up.wait_for_line(r"Flower +\S+ +user 'flower', password '([^']+)' \(shown only this once")
        login = ("flower", line.group(1))
        up.wait_for_line(rf"^Ready: http://127\.0\.0\.1:{up.port}/admin/$")
        up.wait_for_line(r"^worker:general\s*\|.* ready\.$")

        def flower_answers():
            try:
                return http(f"{flower}/api/workers", login=None)[0]
            except OSError:  # not listening yet
                return None

        assert wait_for(flower_answers, timeout=60, interval=0.5, what="Flower to answer") == 401
        assert http(f"{flower}/api/workers", login=("flower", "wrong"))[0] == 401
        assert http(f"{flower}/api/workers", login=login)[0] == 200

        # Nothing under var/ is readable by anyone but its owner.
        assert stat.S_IMODE(var_dir.stat().st_mode) == 0o700
        written = [path for path in var_dir.rglob("*") if path.is_file()]
        assert var_dir / "db.sqlite3" in written and var_dir / "flower-login" in written
        modes = {path: _mode_if_still_there(path) for path in written}
        loose = {str(path): oct(mode) for path, mode in modes.items() if mode is not None and mode & 0o077}
        assert loose == {}, f"files readable by others: {loose}"
    finally:
        stop(up)
    assert up.process.returncode == 0, up.output

    # A second run reuses the login and does not print the password again.
    again = Up(env, port=free_port(), flower_port=free_port()).start()
    try:
        again.wait_for_line(r"Flower +\S+ +user 'flower', password in \S+flower-login$")
        url = f"http://127.0.0.1:{again.flower_port}/api/workers"

        def logged_in():
            try:
                return http(url, login=login)[0] == 200
            except OSError:  # not listening yet
                return False

        wait_for(logged_in, timeout=60, interval=0.5, what="Flower to take the same login")
    finally:
        stop(again)
    assert login[1] not in again.output, "the password was printed again"


def _mode_if_still_there(path) -> int | None:
    """A file's permission bits, or None if it went between the listing and
    now: the running stack's broker takes its message files (a worker's
    reply to Flower's inspect, say) at any moment."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return None
