"""Searching a million jobs: the Job admin's search (jobs.search) over task
name, error and arguments, on PostgreSQL with its trigram GIN index
(migration 0002) and, as the baseline, with the index dropped.

No worker and no broker: the Job table is filled by one INSERT ... SELECT
over generate_series per 100,000 rows (a realistic mix: mostly successes
without an error, a tenth failures with errors from a handful of causes,
arguments with ids, addresses and file names), analysed, then each search
runs what the admin's list runs for it: the count of matches (stopping at
jobs.search.SEARCH_COUNT_LIMIT, as the admin's paginator does) and the
first page of 100, newest first, with the default filter that hides
retried and discarded failures. The figure is the wall time of those
queries (the search's own probes of the index included), and the whole
admin page (rendered by Django's test client) beside it; "exact count" is
the same with a count of every match, as the admin did before the limit.
"""

import argparse
import importlib
import os
import statistics
import time

os.environ.setdefault("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/kit_bench_search")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings_kit")

import django

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402

from bench import harness  # noqa: E402
from jobs import failures  # noqa: E402
from jobs.models import Job  # noqa: E402
from jobs.search import CappedCountPaginator, jobs_search  # noqa: E402

# The index as migration 0002 creates it (dropped for the baseline).
_search_index = importlib.import_module("jobs.migrations.0002_search_index_and_resolved")
CHUNK = 100_000
PAGE = 100
# What a person types: a word of a rare error, an argument (an address of
# one job, chosen at fill time), the first characters of an id (likewise),
# and a word of a common error.
RARE_ERROR = "certificate has expired"
COMMON_ERROR = "timed out"

FILL = """
INSERT INTO jobs_job (id, task_name, args, kwargs, queue, priority, status, attempts, deliveries, progress,
                      progress_message, error, worker, created_at, finished_at)
SELECT gen_random_uuid(),
       (ARRAY['media_tasks.renditions_create', 'mail_tasks.message_send', 'reports.report_generate',
              'jobs.noop'])[1 + i %% 4],
       jsonb_build_array(i, 'upload-' || i || '.jpg'),
       jsonb_build_object('to', 'user-' || i || '@example.org', 'template', 'welcome'),
       (ARRAY['images', 'email', 'reports', 'default'])[1 + i %% 4],
       'medium',
       CASE WHEN i %% 10 = 0 THEN 'FAILURE' ELSE 'SUCCESS' END,
       1, 1, 100, '',
       CASE WHEN i %% 10 <> 0 THEN ''
            WHEN i %% 1000 = 0 THEN 'SSLError: certificate has expired for smtp-' || i %% 7 || '.example.net'
            WHEN i %% 30 = 0 THEN 'BadInput: image ' || i || ' is ' || (i %% 90000) || 'x' || (i %% 70000) || ' pixels'
            ELSE 'TimeoutError: connection to 10.0.' || i %% 255 || '.' || i %% 7 || ' timed out after 30 s'
       END,
       'bench@host',
       now() - make_interval(secs => %(total)s - i),
       now() - make_interval(secs => %(total)s - i)
FROM generate_series(%(start)s, %(stop)s) AS i
"""


def fill(rows: int) -> float:
    """Fill the table with `rows` jobs, unless an earlier run left exactly
    that many (the bench's own database): filling a million takes minutes."""
    began = time.monotonic()
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM jobs_job WHERE worker = 'bench@host'")
        if cursor.fetchone()[0] == rows == Job.objects.count():
            print("  (the table already holds them, from an earlier run)", flush=True)
            return 0.0
        cursor.execute("TRUNCATE jobs_job CASCADE")
        for start in range(1, rows + 1, CHUNK):
            stop = min(rows, start + CHUNK - 1)
            cursor.execute(FILL, {"start": start, "stop": stop, "total": rows})
            print(f"  {stop:,} rows", flush=True)
        cursor.execute("ANALYZE jobs_job")
    return time.monotonic() - began


def admin_queries(term: str, exact_count: bool = False) -> tuple[int, float]:
    """The changelist's queries for a search: the search's probes, the
    count (capped as the admin's paginator caps it, or exact), the first
    page in the admin's order."""
    began = time.perf_counter()
    jobs = jobs_search(Job.objects.exclude(failures.superseded()), term).order_by("-created_at", "-pk")
    paginator = CappedCountPaginator(jobs, PAGE)
    count = jobs.count() if exact_count else paginator.count
    list(jobs[:PAGE])
    return count, (time.perf_counter() - began) * 1000


def measure(terms: dict[str, str], repeats: int, client: Client | None, exact_count: bool = False) -> dict:
    results = {}
    for name, term in terms.items():
        timings, pages = [], []
        for _ in range(repeats):
            count, ms = admin_queries(term, exact_count)
            timings.append(ms)
            if client is not None:
                began = time.perf_counter()
                response = client.get("/admin/jobs/job/", {"q": term})
                pages.append((time.perf_counter() - began) * 1000)
                assert response.status_code == 200
        results[name] = {
            "term": term,
            "matches": count,
            "queries_ms": {"median": statistics.median(timings), "max": max(timings)},
            **({"admin_page_ms": {"median": statistics.median(pages), "max": max(pages)}} if pages else {}),
        }
        page = f", admin page {statistics.median(pages):7.0f} ms" if pages else ""
        print(
            f"  {name:<14} {term!r:<28} {count:>8,} matches  queries {statistics.median(timings):7.1f} ms "
            f"(max {max(timings):.1f}){page}",
            flush=True,
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.search", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100,000 jobs instead of 1,000,000")
    parser.add_argument("--rows", type=int, help="jobs in the table (default 1,000,000; 100,000 with --quick)")
    parser.add_argument("--repeats", type=int, default=7, help="runs of each search (default 7)")
    args = parser.parse_args()
    rows = args.rows or (100_000 if args.quick else 1_000_000)

    harness.ensure_database(django.conf.settings.DATABASES["default"])
    call_command("migrate", verbosity=0, interactive=False)
    started_at = harness.now_stamp()
    load_at_start = [round(load, 2) for load in os.getloadavg()]
    print(f"{os.cpu_count()} cores, load {load_at_start}; {rows:,} jobs", flush=True)
    fill_seconds = fill(rows)
    with connection.cursor() as cursor:
        cursor.execute("SELECT id FROM jobs_job ORDER BY id OFFSET %s LIMIT 1", [rows // 2])
        id_prefix = str(cursor.fetchone()[0])[:8]
    terms = {
        "rare error": RARE_ERROR,
        "argument": f"user-{rows // 2 + 7}@example.org",
        "id prefix": id_prefix,
        "common error": COMMON_ERROR,
    }
    user_model = get_user_model()
    user_model.objects.filter(username="bench-search").delete()
    user_model.objects.create_superuser("bench-search", "bench@example.org", "pw-123456")
    client = Client()
    client.login(username="bench-search", password="pw-123456")

    print("with the trigram index:", flush=True)
    indexed = measure(terms, args.repeats, client)
    print("with the index, counting every match (the admin before its count limit):", flush=True)
    exact = measure(terms, max(1, args.repeats // 3), None, exact_count=True)
    with connection.cursor() as cursor:
        cursor.execute(f"DROP INDEX {_search_index.INDEX_NAME}")
        print("without it (the baseline: a scan of every row):", flush=True)
        baseline = measure(terms, max(1, args.repeats // 3), None)
        began = time.monotonic()
        cursor.execute(_search_index.CREATE_INDEX)
        index_seconds = time.monotonic() - began
        # The planner's statistics of the index's expression come with an
        # ANALYZE after the index exists; the next run plans with them.
        cursor.execute("ANALYZE jobs_job")
    print(f"filled in {fill_seconds:.0f} s; the index built in {index_seconds:.0f} s", flush=True)
    harness.report(
        {
            "benchmark": "search",
            "started_at": started_at,
            "rows": rows,
            "load_average_at_start": load_at_start,
            "fill_seconds": fill_seconds,
            "index_build_seconds": index_seconds,
            "indexed": indexed,
            "indexed_exact_count": exact,
            "baseline_without_index": baseline,
            "ratios_indexed_to_baseline": {
                name: round(indexed[name]["queries_ms"]["median"] / baseline[name]["queries_ms"]["median"], 4)
                for name in terms
            },
        }
    )


if __name__ == "__main__":
    main()
