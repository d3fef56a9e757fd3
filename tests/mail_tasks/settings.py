"""The test settings plus the email templates only tests use
(tests/mail_tasks/templates), for worker processes started by these tests."""

from config.settings.test import *  # noqa: F403
from config.settings.test import BASE_DIR, TEMPLATES

TEST_TEMPLATES = BASE_DIR / "tests" / "mail_tasks" / "templates"
TEMPLATES = [{**TEMPLATES[0], "DIRS": [*TEMPLATES[0]["DIRS"], TEST_TEMPLATES]}]
