"""Production: everything comes from the environment; nothing has a default
that would be unsafe on the internet (no secret key, no DEBUG)."""

from config.secrets import require_production_secrets

from .base import *  # noqa: F403
from .base import env_bool, env_int

# Before anything else: a placeholder or short secret stops every process
# here, with the variable's name (config/secrets.py).
require_production_secrets()

SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", True)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_HSTS_SECONDS = env_int("DJANGO_HSTS_SECONDS", 0)
