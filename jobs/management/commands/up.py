import os
import re
import signal
import socket
import sys
import threading
import time

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import connection, connections
from django.urls import Resolver404, resolve, reverse
from django.utils import autoreload
from kombu.utils.url import maybe_sanitize_url

from jobs.filesystem_broker import broker_tables_prepare, embedded_broker_in_use
from jobs.management.commands._arguments import positive_int
from jobs.management.commands._process import Child, Children, StopSignals
from jobs.management.commands.ensure_admin import AdminAccount, admin_ensure
from jobs.management.commands.flower import AUTH_ENV, flower_login_ensure
from jobs.management.commands.flower import DEFAULT_PORT as FLOWER_PORT
from jobs.queues import WORKER_GROUPS

HOST = "127.0.0.1"
WEB_PORT = 8000
# Per worker group: enough to see jobs run side by side without filling a
# laptop with one process per CPU per group.
CONCURRENCY = 2
# A warm worker shutdown waits for running tasks; past this, SIGKILL. Over
# 30 s: a pool child whose last result the main process had not read when the
# shutdown began waits up to 30 s for it (billiard's
# Worker._ensure_messages_consumed) before exiting.
GRACE_SECONDS = 45
# How each program says it is up. Until then its output is held back and
# only that line shows, one per program; a program that exits first, or
# says nothing of the kind within STARTING_SECONDS, has all of it shown.
READY_LINE = {
    "web": re.compile(r"^Starting development server at "),
    "worker": re.compile(r" ready\.$"),
    "beat": re.compile(r"beat: Starting\.\.\.$"),
    "flower": re.compile(r"Visit me at "),
    "smtp-sink": re.compile(r"^SMTP sink listening on "),
}
STARTING_SECONDS = 60
# Blank lines, and runserver's advice, which `up` makes wrong: Ctrl-C stops
# everything.
DROPPED_LINE = re.compile(r"^(\s*|Quit the server with CONTROL-C\.)$")


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        # A port in TIME_WAIT from the last run is free to listen on.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def port_answers(port: int) -> bool:
    try:
        socket.create_connection((HOST, port), timeout=0.2).close()
    except OSError:
        return False
    return True


def exit_description(returncode: int) -> str:
    if returncode < 0:
        return f"was killed by {signal.Signals(-returncode).name}"
    return f"exited with code {returncode}"


class Command(BaseCommand):
    help = (
        "Run everything for development (web app, workers, beat, Flower, SMTP sink) after migrating; "
        "Ctrl-C stops it all."
    )

    def add_arguments(self, parser):
        parser.add_argument("--port", type=positive_int, default=WEB_PORT, help=f"Web app port (default: {WEB_PORT}).")
        parser.add_argument(
            "--flower-port", type=positive_int, default=FLOWER_PORT, help=f"Flower port (default: {FLOWER_PORT})."
        )
        parser.add_argument(
            "--concurrency",
            type=positive_int,
            default=CONCURRENCY,
            help=f"Pool processes per worker group (default: {CONCURRENCY}).",
        )
        parser.add_argument("--no-flower", action="store_true", help="Do not start Flower.")
        parser.add_argument("--no-beat", action="store_true", help="Do not start beat (no periodic tasks).")
        parser.add_argument(
            "--no-smtp-sink",
            action="store_true",
            help="Do not start the local SMTP sink (it only starts when EMAIL_HOST is this machine).",
        )
        parser.add_argument(
            "--noreload", action="store_true", help="Do not restart the web app and workers when code changes."
        )
        parser.add_argument(
            "--grace",
            type=positive_int,
            default=GRACE_SECONDS,
            help=f"Seconds to wait for the programs to stop before killing them (default: {GRACE_SECONDS}).",
        )

    def handle(self, *args, **options):
        # Everything the embedded default writes (SQLite with sessions and
        # tokens, broker messages, reports) is its owner's only; the
        # children inherit the umask. var/ itself is 0700 (settings).
        os.umask(0o077)
        self.output_lock = threading.RLock()
        # Child name -> (when it started, its output held back until ready).
        self.starting: dict[str, tuple[float, list[str]]] = {}
        self.check_ports(options)
        # Flower always asks for a login: FLOWER_BASIC_AUTH, else one made
        # once under var/ (shown in the banner the first time). Checked
        # before anything starts, not as a crash later.
        self.flower_login = None if options["no_flower"] else flower_login_ensure()
        self.say(f"Migrating the database ({self.database_description()}).")
        call_command("migrate", interactive=False, verbosity=0)
        account = admin_ensure()
        broker_tables_prepare()
        connections.close_all()  # the children open their own

        commands = self.child_commands(options)
        self.name_width = max(len(name) for name, _ in commands)
        children = Children(env=self.child_env(), cwd=settings.BASE_DIR, write=self.write_child_line)
        crashed = None
        with StopSignals() as signals:
            try:
                self.say(self.banner(options, account))
                for name, argv in commands:
                    if name == "flower":
                        # Flower asks the workers for their state as it starts
                        # and warns about each that does not answer yet.
                        self.wait_for_workers(children, signals)
                    if name.split(":")[0] in READY_LINE:
                        self.starting[name] = (time.monotonic(), [])
                    children.start(name, argv)
                crashed = self.supervise(children, signals, options["port"])
            finally:
                self.stop_children(children, signals, options["grace"])
                for name in list(self.starting):
                    self.show_held_output(name)
        if crashed is not None:
            raise CommandError(f"{crashed.name} {exit_description(crashed.returncode)} unexpectedly; stopped the rest.")
        self.say("Stopped.")

    @staticmethod
    def wants_smtp_sink(options: dict) -> bool:
        # Only when mail would go to this machine: a configured relay means
        # real mail, and the sink must not pretend to be it.
        return not options["no_smtp_sink"] and settings.EMAIL_HOST in ("127.0.0.1", "localhost", "::1")

    def check_ports(self, options: dict) -> None:
        wanted = {"--port": options["port"]}
        if not options["no_flower"]:
            wanted["--flower-port"] = options["flower_port"]
        if self.wants_smtp_sink(options):
            wanted["--no-smtp-sink (EMAIL_PORT)"] = settings.EMAIL_PORT
        for option, port in wanted.items():
            if not port_free(port):
                raise CommandError(
                    f"Port {port} on {HOST} is in use (another `manage.py up`?). Choose another with {option}."
                )

    def child_env(self) -> dict:
        env = {name: value for name, value in os.environ.items() if name != autoreload.DJANGO_AUTORELOAD_ENV}
        env["PYTHONUNBUFFERED"] = "1"  # lines arrive as they are written, not in 8 KiB blocks
        # runserver's warning against production use, five lines at each
        # start: `up` is a development tool and says so in its help.
        env["DJANGO_RUNSERVER_HIDE_WARNING"] = "true"
        return env

    def child_commands(self, options: dict) -> list[tuple[str, list[str]]]:
        """(name, argv) of every program to run, in start order."""
        manage = [sys.executable, str(settings.BASE_DIR / "manage.py")]
        noreload = options["noreload"]
        commands = [("web", [*manage, "runserver", f"{HOST}:{options['port']}", *(["--noreload"] if noreload else [])])]
        for group in WORKER_GROUPS:
            worker = [*manage, "worker", "--group", group, "--concurrency", str(options["concurrency"]), "--quiet"]
            commands.append((f"worker:{group}", [*worker, *(["--no-autoreload"] if noreload else [])]))
        if not options["no_beat"]:
            commands.append(("beat", [*manage, "beat", "--quiet"]))
        if not options["no_flower"]:
            commands.append(("flower", [*manage, "flower", "--address", HOST, "--port", str(options["flower_port"])]))
        if self.wants_smtp_sink(options):
            commands.append(("smtp-sink", [*manage, "smtp_sink"]))
        return commands

    def wait_for_workers(self, children: Children, signals: StopSignals) -> None:
        """Until every worker said it is ready, one exited, or a stop was
        asked for; at most STARTING_SECONDS."""
        deadline = time.monotonic() + STARTING_SECONDS
        while any(name.startswith("worker:") for name in self.starting) and time.monotonic() < deadline:
            if signals.stop.is_set() or children.first_exited() is not None:
                return
            signals.stop.wait(0.1)

    def supervise(self, children: Children, signals: StopSignals, port: int) -> Child | None:
        """Wait for a stop signal (None) or for a child to die (that child).
        Says so once the web app answers."""
        announced = False
        while not signals.stop.is_set():
            crashed = children.first_exited()
            if crashed is not None:
                self.show_held_output(crashed.name)
                return crashed
            for name, (since, _) in list(self.starting.items()):
                if time.monotonic() - since > STARTING_SECONDS:
                    self.show_held_output(name)
            if not announced and port_answers(port):
                self.say(f"Ready: http://{HOST}:{port}{reverse('admin:index')}")
                announced = True
            signals.stop.wait(0.25)
        return None

    def stop_children(self, children: Children, signals: StopSignals, grace: int) -> None:
        names = ", ".join(child.name for child in children.started)
        self.say(f"Stopping {names} (up to {grace}s; Ctrl-C again to kill them now).")
        for child in children.stop(grace=grace, hurry=signals.hurry):
            why = "asked to hurry" if signals.hurry.is_set() else f"did not stop within {grace}s"
            self.say(f"{child.name} {why}: killed.")

    def banner(self, options: dict, account: AdminAccount) -> str:
        web = f"http://{HOST}:{options['port']}"
        login = f"user {account.username!r}"
        if account.generated_password:
            login += f", password {account.generated_password!r} (shown only this once)"
        elif account.created:
            login += ", password from DJANGO_SUPERUSER_PASSWORD"
        lines = [""]
        if self.has_home_page():
            lines.append(f"  Web app   {web}/")
        lines += [
            f"  Admin     {web}{reverse('admin:index')}  {login}",
            f"  API       {web}{reverse('jobs:job-list')}  (Token or admin session)",
        ]
        lines.append(f"  Dashboard {web}{reverse('admin:ops_dashboard')}  metrics at {web}{reverse('ops:metrics')}")
        if not options["no_flower"]:
            flower_login = {
                "environment": f"login from {AUTH_ENV}",
                "file": f"user {self.flower_login.user!r}, password in {self.flower_login.path}",
                "generated": f"user {self.flower_login.user!r}, password {self.flower_login.password!r}"
                " (shown only this once; kept in var/, readable by you only)",
            }[self.flower_login.source]
            lines.append(f"  Flower    http://{HOST}:{options['flower_port']}/  {flower_login}")
        if self.wants_smtp_sink(options):
            lines.append(
                f"  Mail sink {web}{reverse('mail_tasks:sink-list')}"
                f"  (SMTP on {settings.EMAIL_HOST}:{settings.EMAIL_PORT})"
            )
        lines += [
            f"  Database  {self.database_description()}",
            f"  Broker    {self.broker_description()}",
            "Ctrl-C stops everything.",
            "",
        ]
        return "\n".join(lines)

    @staticmethod
    def has_home_page() -> bool:
        try:
            resolve("/")
        except Resolver404:
            return False
        return True

    @staticmethod
    def database_description() -> str:
        where = connection.settings_dict["NAME"]
        if connection.settings_dict.get("HOST"):
            where = f"{where} on {connection.settings_dict['HOST']}"
        return f"{connection.vendor} {where}"

    @staticmethod
    def broker_description() -> str:
        if embedded_broker_in_use():
            return f"filesystem, in {settings.BROKER_DIR}"
        return maybe_sanitize_url(settings.CELERY_BROKER_URL)

    def say(self, message: str) -> None:
        with self.output_lock:
            self.stdout.write(message)
            self.stdout.flush()

    def write_child_line(self, name: str, line: str) -> None:
        with self.output_lock:
            if name in self.starting:
                if READY_LINE[name.split(":")[0]].search(line):
                    del self.starting[name]
                else:
                    self.starting[name][1].append(line)
                    return
            elif DROPPED_LINE.match(line):
                return
            self.say(f"{name:<{self.name_width}} | {line}")

    def show_held_output(self, name: str) -> None:
        """Everything a program said while starting, and from now on as it
        comes: it did not start as it should."""
        with self.output_lock:
            _, held = self.starting.pop(name, (0, []))
            for line in held:
                self.say(f"{name:<{self.name_width}} | {line}")
