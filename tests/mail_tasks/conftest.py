"""Fixtures for the email tests: SMTP servers on loopback, workers that send
to them, and the test-only templates (tests/mail_tasks/templates)."""

import pytest

from tests.mail_tasks import settings as mail_test_settings
from tests.mail_tasks.smtp_servers import Recording, SmtpServer


@pytest.fixture(autouse=True)
def test_templates(settings):
    settings.TEMPLATES = mail_test_settings.TEMPLATES
    settings.DEFAULT_FROM_EMAIL = "kit@example.com"


@pytest.fixture
def worker_env(worker_env) -> dict:
    """Workers load the test-only templates, retry within seconds, and send
    from the same address as the tests."""
    worker_env.update(
        DJANGO_SETTINGS_MODULE="tests.mail_tasks.settings",
        DEFAULT_FROM_EMAIL="kit@example.com",
        EMAIL_TIMEOUT="5",
        MAIL_RETRY_BACKOFF_SECONDS="1",
        MAIL_RETRY_MAX="3",
    )
    return worker_env


@pytest.fixture
def smtp_server():
    """smtp_server(handler=Recording(), port=None, start=True) -> SmtpServer,
    stopped when the test ends."""
    servers: list[SmtpServer] = []

    def make(handler: Recording | None = None, *, port: int | None = None, start: bool = True) -> SmtpServer:
        server = SmtpServer(handler or Recording(), port=port)
        servers.append(server)
        return server.start() if start else server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def mail_worker(start_worker, worker_env):
    """mail_worker(server, concurrency=1, **env) -> a worker on the email
    queue that sends to `server`."""

    def start(server: SmtpServer, *, concurrency: int = 1, **env):
        worker_env.update(server.env(), **env)
        return start_worker(queues="email", concurrency=concurrency)

    return start
