import ipaddress
import os
from urllib.parse import quote, unquote, urlparse

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from jobs.management.commands._arguments import positive_int
from jobs.management.commands._celery import celery_run

# "user:password", several separated by commas. Flower reads the variable
# itself, so the password never appears on a command line (`ps` shows those).
AUTH_ENV = "FLOWER_BASIC_AUTH"
DEFAULT_PORT = 5555
# A Flower killed without warning loses at most this much task history.
STATE_SAVE_INTERVAL_MS = 60_000
# RabbitMQ's management API, for Flower's Broker tab. Flower reads the
# variable itself; unset, it is derived from the broker URL.
BROKER_API_ENV = "FLOWER_BROKER_API"
MANAGEMENT_PORT = {"amqp": 15672, "pyamqp": 15672, "amqps": 15671}


def broker_api_url(broker_url: str) -> str | None:
    """The management API of an amqp:// broker: the same host and login, the
    management plugin's port (https for amqps). None for other brokers."""
    parsed = urlparse(broker_url)
    port = MANAGEMENT_PORT.get(parsed.scheme)
    if port is None:
        return None
    scheme = "https" if parsed.scheme == "amqps" else "http"
    user = quote(unquote(parsed.username or "guest"), safe="")
    password = quote(unquote(parsed.password or "guest"), safe="")
    return f"{scheme}://{user}:{password}@{parsed.hostname or 'localhost'}:{port}/api/"


def broker_api_configure() -> str | None:
    """Set FLOWER_BROKER_API for the Flower about to run in this process,
    unless it is set already; return it. An environment variable, not an
    argument: the URL holds the broker password, and `ps` shows arguments."""
    configured = os.environ.get(BROKER_API_ENV, "").strip()
    if configured:
        if urlparse(configured).scheme not in ("http", "https"):
            raise CommandError(f"{BROKER_API_ENV} must be an http(s):// URL of RabbitMQ's management API.")
        return configured
    derived = broker_api_url(settings.CELERY_BROKER_URL)
    if derived:
        os.environ[BROKER_API_ENV] = derived
    return derived


def is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:  # "" (every interface) or a host name
        return False


def flower_auth_check(address: str) -> bool:
    """Whether Flower will ask for a login; CommandError if it must not start.

    Flower shows task arguments and results and can revoke tasks, so without
    FLOWER_BASIC_AUTH it only runs in development (DEBUG) on loopback.
    """
    credentials = os.environ.get(AUTH_ENV, "").strip()
    if credentials:
        for pair in credentials.split(","):
            user, _, password = pair.strip().partition(":")
            if not user or not password:
                raise CommandError(f"{AUTH_ENV} must be user:password (several separated by commas).")
        return True
    if not settings.DEBUG:
        raise CommandError(f"Set {AUTH_ENV}=user:password: Flower never runs without a login when DEBUG is off.")
    if not is_loopback(address):
        raise CommandError(
            f"Without {AUTH_ENV}, Flower listens on loopback only (127.0.0.1), not on {address or 'every interface'}."
        )
    return False


class Command(BaseCommand):
    help = "Run Flower, the live web view of workers and tasks, with a login (FLOWER_BASIC_AUTH)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--address",
            default="127.0.0.1",
            help="Address to listen on (default: 127.0.0.1; 0.0.0.0 in a container, behind a login).",
        )
        parser.add_argument(
            "--port", type=positive_int, default=DEFAULT_PORT, help=f"Port to listen on (default: {DEFAULT_PORT})."
        )

    def handle(self, *args, **options):
        if not flower_auth_check(options["address"]):
            self.stderr.write(f"Flower runs without a login ({AUTH_ENV} is unset; DEBUG, loopback only).")
        broker_api_configure()
        if settings.CELERY_BROKER_URL.startswith("filesystem://"):
            broker_tab_explain_embedded()
        settings.VAR_DIR.mkdir(parents=True, exist_ok=True)
        code = celery_run(self.build_argv(options))
        if code:
            raise CommandError(f"Flower exited with code {code}.", returncode=code)

    def build_argv(self, options: dict) -> list[str]:
        """The `celery flower` arguments (Flower takes only --name=value)."""
        return [
            "flower",
            f"--address={options['address']}",
            f"--port={options['port']}",
            # Task history survives a restart.
            "--persistent=True",
            f"--db={settings.VAR_DIR / 'flower.db'}",
            f"--state_save_interval={STATE_SAVE_INTERVAL_MS}",
        ]


EMBEDDED_BROKER_TAB = (
    "Broker: not available on the embedded broker. The filesystem broker has no server to ask for queue "
    "lengths and consumers, and Flower reads them from RabbitMQ's management API. The admin's operations "
    "dashboard (/admin/ops/dashboard/) shows the messages waiting in each queue."
)


def broker_tab_explain_embedded() -> None:
    """Flower's Broker tab answers a bare 404 ("'filesystem' broker is not
    supported") on the embedded broker: have it say why, in Flower's page.
    Flower builds its routes from flower.urls.handlers when it starts."""
    from flower import urls
    from flower.views import BaseHandler
    from tornado import web

    class EmbeddedBrokerView(BaseHandler):
        @web.authenticated
        def get(self):
            self.render("404.html", message=EMBEDDED_BROKER_TAB)

    for index, handler in enumerate(urls.handlers):
        if isinstance(handler, web.URLSpec) and handler.name == "broker":
            urls.handlers[index] = web.url(handler.regex.pattern, EmbeddedBrokerView, name="broker")
