"""The embedded default as it was before jobs/filesystem_broker.py: kombu's
own filesystem transport (a second's sleep between empty polls, first in
first out, a message forgotten once read). The baseline of bench.embedded."""

from config.settings.local import *  # noqa: F403

CELERY_BROKER_TRANSPORT = "kombu.transport.filesystem:Transport"
