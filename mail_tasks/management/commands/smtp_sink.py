import signal
import threading

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from mail_tasks.sink import sink_start


class Command(BaseCommand):
    help = "Run a local SMTP server that stores every email it receives, listed at /mail/sink/."

    def add_arguments(self, parser):
        parser.add_argument(
            "--host",
            default=settings.EMAIL_HOST,
            help=f"Address to listen on (default: EMAIL_HOST, {settings.EMAIL_HOST}).",
        )
        parser.add_argument(
            "--port",
            type=int,
            default=settings.EMAIL_PORT,
            help=f"Port to listen on (default: EMAIL_PORT, {settings.EMAIL_PORT}).",
        )

    def handle(self, *args, host: str, port: int, **options):
        try:
            controller = sink_start(host=host, port=port)
        except (OSError, RuntimeError) as exc:
            raise CommandError(f"Cannot listen on {host}:{port}: {exc}") from None
        self.stdout.write(f"SMTP sink listening on {host}:{port}; received mail is listed at /mail/sink/")
        stopped = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stopped.set())
        try:
            stopped.wait()
        finally:
            controller.stop()
        self.stdout.write("SMTP sink stopped.")
