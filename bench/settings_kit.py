"""The kit exactly as the tests run it (config.settings.test), pointed at the
benchmark's own PostgreSQL database and RabbitMQ vhost.

The URLs are assigned, not defaulted: a DATABASE_URL exported for the tests
must never make a benchmark truncate the tests' (or anyone's) tables.
"""

import os

from config.env import env_str

BENCH_DATABASE_URL = env_str("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/kit_bench")
BENCH_BROKER_URL = env_str("BENCH_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/kit-bench")
os.environ["DATABASE_URL"] = BENCH_DATABASE_URL
os.environ["CELERY_BROKER_URL"] = BENCH_BROKER_URL
# Events cost every variant the same publish per task; Flower is not watching.
os.environ["CELERY_WORKER_SEND_TASK_EVENTS"] = "false"

from config.settings.test import *  # noqa: E402,F403
