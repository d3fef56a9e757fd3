"""Deduplication keys (a job's unique_key, a message's idempotency_key) as
stored: scoped to whoever sent them, so no caller can ever receive, or
block, another owner's job or message.

A key sent over an API is stored as `owner:<user id>:<HMAC of the key>`.
The kit's own keys ("media_tasks.renditions_create:<image id>",
"campaign:<id>:<HMAC of an address>") never start with `owner:`, so none
can be taken from an API. The HMAC, keyed with SECRET_KEY, means a stored
key tells nothing about what was sent, and a key derived from a value (an
address on a campaign's list) cannot be recomputed to test membership.
"""

import hashlib
import hmac

from django.conf import settings

OWNER_PREFIX = "owner:"


def keyed_digest(value: str, *, purpose: str) -> str:
    """HMAC-SHA256 of `value` under SECRET_KEY, distinct per `purpose`
    (64 hex characters)."""
    key = f"kit.keys.{purpose}:{settings.SECRET_KEY}".encode()
    return hmac.new(key, value.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


def owner_scoped_key(key: str | None, owner) -> str | None:
    """The stored form of a key sent by `owner` (a user) over an API; None
    for no key. Fits the 200-character columns whatever was sent."""
    if key is None:
        return None
    owner_id = getattr(owner, "pk", None) or "anonymous"
    return f"{OWNER_PREFIX}{owner_id}:{keyed_digest(key, purpose='owner-key')}"
