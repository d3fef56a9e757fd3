"""Run by test_ratelimit.py as several processes at once: set up Django on
the DATABASE_URL given, wait for a common start time, take `count` slots of
the shared rate limit, and write when each was granted."""

import json
import sys
import time

import django


def main(count: int, start_at: float, out: str) -> None:
    django.setup()
    from mail_tasks.ratelimit import wait_for_slot

    time.sleep(max(0.0, start_at - time.time()))
    stamps = []
    for _ in range(count):
        assert wait_for_slot("example.com", deadline=time.monotonic() + 60)
        stamps.append(time.time())
    with open(out, "w") as handle:
        json.dump(stamps, handle)


if __name__ == "__main__":
    main(int(sys.argv[1]), float(sys.argv[2]), sys.argv[3])
