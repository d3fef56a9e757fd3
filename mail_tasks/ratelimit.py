"""Messages per second, globally and per recipient domain, shared by every
worker process on every machine through the database.

Why the database: it is the one thing every worker already shares, on
PostgreSQL and on the embedded SQLite alike, so the limit needs no extra
service (Redis) and holds with any number of workers. The cost is a short
transaction per message while a limit is set; with no limit set, nothing is
read or written.

The algorithm is GCRA (a token bucket of one token, stored as one float): a
row per key holds `tat`, the earliest time the next message may go. A
message goes when `tat <= now` for every key it needs, and moves each `tat`
to `now + 1/rate`. All keys are checked and moved in one transaction with
their rows locked in key order (SELECT ... FOR UPDATE on PostgreSQL, so two
workers cannot take the same slot and never deadlock; SQLite's IMMEDIATE
transactions, set in config/settings/base.py, serialise writers anyway), so
a message takes a slot from both limits or from neither. A single UPDATE ...
RETURNING per key would be one round trip cheaper, but could take the global
slot and then find the domain busy, and two limits must hold together.

Time is the worker's clock: machines are NTP-synchronised to milliseconds,
and a skew of d seconds lets at most d x rate extra messages through.
"""

import time

from django.conf import settings
from django.db import transaction

from mail_tasks.models import RateBucket

GLOBAL_KEY = "*"
# Longest single sleep, so a worker re-checks (and its deadline) regularly.
MAX_SLEEP_SECONDS = 1.0

# Keys whose row this process knows exists, to skip the INSERT next time.
_known_keys: set[str] = set()


def limited() -> bool:
    """Whether any limit is set; with none, a message needs no slot (nor its
    recipient's domain, which costs an address parse per message)."""
    return settings.MAIL_RATE_PER_SECOND > 0 or settings.MAIL_RATE_PER_DOMAIN_PER_SECOND > 0


def limits_for(domain: str) -> dict[str, float]:
    """Seconds between two messages, per bucket key this recipient needs."""
    limits = {}
    if settings.MAIL_RATE_PER_SECOND > 0:
        limits[GLOBAL_KEY] = 1 / settings.MAIL_RATE_PER_SECOND
    if settings.MAIL_RATE_PER_DOMAIN_PER_SECOND > 0:
        limits[f"domain:{domain}"[:255]] = 1 / settings.MAIL_RATE_PER_DOMAIN_PER_SECOND
    return limits


def try_acquire(intervals: dict[str, float]) -> float:
    """Take one slot from every bucket, or from none. Returns 0 when taken,
    otherwise the seconds until the busiest bucket frees up."""
    while True:
        missing = [key for key in intervals if key not in _known_keys]
        if missing:
            RateBucket.objects.bulk_create([RateBucket(key=key, tat=0) for key in missing], ignore_conflicts=True)
            _known_keys.update(missing)
        with transaction.atomic():
            buckets = list(RateBucket.objects.select_for_update().filter(key__in=intervals).order_by("key"))
            if len(buckets) == len(intervals):
                now = time.time()
                wait = max(bucket.tat - now for bucket in buckets)
                if wait > 0:
                    return wait
                for bucket in buckets:
                    RateBucket.objects.filter(key=bucket.key).update(tat=now + intervals[bucket.key])
                return 0.0
        # A row was deleted since this process made it: make it again.
        _known_keys.difference_update(intervals)


def wait_for_slot(domain: str, *, deadline: float) -> bool:
    """Block until a message to `domain` may go; False if that would be
    after `deadline` (time.monotonic())."""
    intervals = limits_for(domain)
    if not intervals:
        return True
    while True:
        wait = try_acquire(intervals)
        if wait <= 0:
            return True
        if time.monotonic() + wait > deadline:
            return False
        time.sleep(min(wait, MAX_SLEEP_SECONDS))
