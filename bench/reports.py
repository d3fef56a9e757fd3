"""python -m bench.reports [--quick] [--rounds R]

Report export speed and memory: the jobs.export report written by a real
worker (prefork, one child) on RabbitMQ and PostgreSQL, beside the limits
on the same rows in the same run:

  csv    kit       reports.report_generate through a worker (on PostgreSQL
                   a QuerySet's CSV is written by COPY: reports/writers/pg_copy.py)
         kit-python  the same with REPORTS_CSV_WITH_COPY=false: rows read
                   from a server-side cursor in chunks and written by Python
         copy      PostgreSQL's COPY (the report's own query) TO STDOUT WITH
                   CSV, streamed to a file: the database alone
         csv-module  the same queryset read in chunks into Python's
                   csv.writer with no conversion: Python's floor
  xlsx   kit       reports.report_generate through a worker
         openpyxl  openpyxl's write-only mode fed the same queryset, with only
                   what openpyxl needs (UUIDs as text, naive datetimes)

Variants run back to back in each round (1 round unless --rounds says more),
so load from elsewhere lands on all of them alike; figures are medians and
ratios are ratios of medians. The kit's time is its job's started_at to
finished_at as the worker recorded them (count, query, write, move into
place; worker start-up and publishing are outside); the limits are timed
around the call. Each kit run gets a fresh worker, so the child's peak RSS
(VmHWM) is that report's alone. Full: CSV at 100,000 and 1,000,000 rows,
XLSX at 200,000; quick: CSV at 10,000 and 100,000, XLSX at 10,000. The rows
are Job rows made by generate_series, 10,000 per day from 2025-01-01, a
tenth failed with an error message (some formula-like, so neutralisation
has work to do).

Needs PostgreSQL and RabbitMQ on loopback; uses its own database
(kit_bench_reports) and vhost (kit-bench-reports), recreating the vhost.
"""

import argparse
import os
import statistics
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

# Before Django loads settings: a database and vhost of its own, so this never
# truncates the tests' or another benchmark's tables; and where the worker
# and this process both find the report files.
os.environ.setdefault("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/kit_bench_reports")
os.environ.setdefault("BENCH_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/kit-bench-reports")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings_kit")

ROWS_PER_DAY = 10_000
FIRST_DAY = date(2025, 1, 1)
QUICK = {"csv": (10_000, 100_000), "xlsx": 10_000}
FULL = {"csv": (100_000, 1_000_000), "xlsx": 200_000}
# Generous: a worker on a busy 2-core machine writes more than 2,000 rows a second.
SECONDS_PER_ROW_LIMIT = 1 / 2_000

SEED_SQL = """
INSERT INTO jobs_job (
    id, task_name, args, kwargs, queue, priority, status, attempts, deliveries, progress, progress_message,
    error, worker, created_at, queued_at, started_at, finished_at
)
SELECT
    gen_random_uuid(), 'bench.task_' || (n %% 7), '[]', '{}', 'default', 'medium',
    CASE WHEN n %% 10 = 0 THEN 'FAILURE' ELSE 'SUCCESS' END, 1 + n %% 3, 1, 100, '',
    CASE WHEN n %% 100 = 0 THEN '=HYPERLINK("http://example.com/?' || n || '")'
         WHEN n %% 10 = 0 THEN 'RuntimeError: upstream answered 503 for item ' || n ELSE '' END,
    'bench@localhost', at, at, at + interval '0.25 seconds',
    at + (n %% 50) * interval '0.1 seconds' + interval '0.5 seconds'
FROM (
    SELECT n, %(first)s::timestamptz + n * (interval '1 day' / %(per_day)s) AS at
    FROM generate_series(0, %(rows)s - 1) AS n
) AS series
"""


def seed(rows: int) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE jobs_job, reports_reportrun, django_celery_results_taskresult CASCADE")
        cursor.execute(SEED_SQL, {"first": FIRST_DAY.isoformat() + " 00:00+00", "per_day": ROWS_PER_DAY, "rows": rows})
        cursor.execute("ANALYZE jobs_job")


def export_params(rows: int) -> dict:
    """The period that holds exactly the first `rows` seeded rows."""
    days = rows // ROWS_PER_DAY
    return {"period": {"from": FIRST_DAY.isoformat(), "to": (FIRST_DAY + timedelta(days=days - 1)).isoformat()}}


def _queryset(rows: int):
    from reports.registry import get_report_type

    report = get_report_type("jobs.export")
    return report, report.rows(report.clean(export_params(rows)))


def copy_csv(rows: int, path: Path) -> float:
    """PostgreSQL's COPY of the report's own query, streamed to a file."""
    import psycopg
    from django.db import connection

    _, queryset = _queryset(rows)
    sql, params = queryset.query.sql_with_params()
    with connection.cursor() as cursor:
        statement = psycopg.ClientCursor(cursor.connection).mogrify(sql, params)
    started = time.perf_counter()
    with connection.cursor() as cursor, open(path, "wb") as out:
        with cursor.cursor.copy(f"COPY ({statement}) TO STDOUT WITH CSV HEADER") as copy:
            for data in copy:
                out.write(data)
    return time.perf_counter() - started


def csv_module(rows: int, path: Path) -> float:
    """The same queryset, in chunks, into csv.writer: no conversion at all."""
    import csv

    from django.conf import settings

    report, queryset = _queryset(rows)
    started = time.perf_counter()
    with open(path, "w", newline="", buffering=1 << 20) as out:
        writer = csv.writer(out)
        writer.writerow([column.heading for column in report.columns])
        writer.writerows(queryset.iterator(chunk_size=settings.REPORTS_CHUNK_SIZE))
    return time.perf_counter() - started


def bare_openpyxl(rows: int, path: Path) -> float:
    """openpyxl write-only fed the same rows, converted only as far as
    openpyxl requires (it refuses UUIDs and time-zone-aware datetimes)."""
    from datetime import datetime
    from uuid import UUID

    from django.conf import settings
    from openpyxl import Workbook

    report, queryset = _queryset(rows)
    started = time.perf_counter()
    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet("Jobs")
    sheet.append([column.heading for column in report.columns])
    for row in queryset.iterator(chunk_size=settings.REPORTS_CHUNK_SIZE):
        sheet.append(
            [str(v) if isinstance(v, UUID) else v.replace(tzinfo=None) if isinstance(v, datetime) else v for v in row]
        )
    workbook.save(path)
    return time.perf_counter() - started


def _child_peak_rss_kib(main_pid: int) -> int:
    children = Path(f"/proc/{main_pid}/task/{main_pid}/children").read_text().split()
    if len(children) != 1:
        raise RuntimeError(f"expected one pool child of worker {main_pid}, found {children}")
    for line in Path(f"/proc/{children[0]}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc status")


def kit(rows: int, format: str, log_path: Path, env: dict | None = None) -> dict:
    """A report run through a fresh worker; seconds and the child's peak RSS."""
    from bench import harness
    from jobs.models import JobStatus
    from reports import services
    from reports.models import ReportRun

    run = services.report_request(report_type="jobs.export", format=format, params=export_params(rows))
    job = run.job
    with harness.Worker(
        name=f"reports-{format}-{rows}",
        settings_module="bench.settings_kit",
        queue="reports",
        concurrency=1,
        log_path=log_path,
        env=env,
    ) as worker:

        def done() -> bool:
            worker.check_alive()
            job.refresh_from_db()
            return job.is_finished

        harness.wait_until(done, timeout=120 + rows * SECONDS_PER_ROW_LIMIT, what=f"the {format} report ({log_path})")
        peak = _child_peak_rss_kib(worker.process.pid)
    if job.status != JobStatus.SUCCESS:
        raise RuntimeError(f"The {format} report ended {job.status}: {job.error} ({log_path})")
    run = ReportRun.objects.get(pk=run.pk)
    if run.rows != rows:
        raise RuntimeError(f"The report wrote {run.rows} rows, not {rows}.")
    result = {
        "seconds": (job.finished_at - job.started_at).total_seconds(),
        "peak_rss_mib": peak / 1024,
        "bytes": run.size,
    }
    run.file.delete(save=False)  # a million rows is a quarter of a gigabyte
    return result


def _measure_limit(function, rows: int, scratch: Path, suffix: str) -> dict:
    path = scratch / f"limit-{function.__name__}-{rows}.{suffix}"
    seconds = function(rows, path)
    size = path.stat().st_size
    path.unlink()
    return {"seconds": seconds, "bytes": size}


def run(*, quick: bool, rounds: int | None = None) -> dict:
    from django.conf import settings

    from bench import harness

    sizes = QUICK if quick else FULL
    # One round: a quick run's second round cost `make bench` 35 s of its 5 minutes.
    rounds = rounds or 1
    started_at, scratch, machine = harness.prepare_run()

    most = max(*sizes["csv"], sizes["xlsx"])
    seeding = time.perf_counter()
    seed(most)
    print(f"Seeded {most:,} job rows in {time.perf_counter() - seeding:.1f} s; {rounds} round(s)\n", flush=True)

    measurements: list[dict] = []
    runs: dict[tuple[str, int], list[dict]] = {}

    def record(round_number: int, name: str, rows: int, figures: dict) -> None:
        figures = {"round": round_number, "variant": name, "rows": rows, **figures}
        figures["rows_per_second"] = rows / figures["seconds"]
        measurements.append(figures)
        runs.setdefault((name, rows), []).append(figures)
        rss = f"  peak RSS {figures['peak_rss_mib']:6.1f} MiB" if "peak_rss_mib" in figures else ""
        print(
            f"round {round_number}  {name:<15} {rows:>9,} rows  {figures['seconds']:7.2f} s  "
            f"{figures['rows_per_second']:9,.0f} rows/s  {figures['bytes'] / 2**20:7.1f} MiB{rss}",
            flush=True,
        )

    # Each round runs every variant back to back, so load from whatever else
    # runs on the machine lands on all of them alike.
    python_csv = {"REPORTS_CSV_WITH_COPY": "false"}
    for number in range(1, rounds + 1):
        for rows in sizes["csv"]:
            record(number, "csv-copy", rows, _measure_limit(copy_csv, rows, scratch, "csv"))
            record(number, "csv-module", rows, _measure_limit(csv_module, rows, scratch, "csv"))
            record(number, "csv-kit", rows, kit(rows, "csv", scratch / f"worker-csv-{rows}-{number}.log"))
            log = scratch / f"worker-csv-python-{rows}-{number}.log"
            record(number, "csv-kit-python", rows, kit(rows, "csv", log, python_csv))
        rows = sizes["xlsx"]
        record(number, "xlsx-openpyxl", rows, _measure_limit(bare_openpyxl, rows, scratch, "xlsx"))
        record(number, "xlsx-kit", rows, kit(rows, "xlsx", scratch / f"worker-xlsx-{rows}-{number}.log"))

    def median(name: str, rows: int, figure: str) -> float:
        return statistics.median(run[figure] for run in runs[(name, rows)])

    summary = {
        f"{name}@{rows}": {
            "seconds": median(name, rows, "seconds"),
            "rows_per_second": rows / median(name, rows, "seconds"),
            **({"peak_rss_mib": median(name, rows, "peak_rss_mib")} if "peak_rss_mib" in found[0] else {}),
        }
        for (name, rows), found in runs.items()
    }
    small, large = sizes["csv"]
    xlsx = sizes["xlsx"]

    def ratio(a: str, b: str, figure: str = "seconds") -> float:
        return summary[a][figure] / summary[b][figure]

    ratios = {
        f"csv kit/copy time @{large}": ratio(f"csv-kit@{large}", f"csv-copy@{large}"),
        f"csv kit/copy time @{small}": ratio(f"csv-kit@{small}", f"csv-copy@{small}"),
        f"csv kit-python/csv-module time @{large}": ratio(f"csv-kit-python@{large}", f"csv-module@{large}"),
        f"xlsx kit/openpyxl time @{xlsx}": ratio(f"xlsx-kit@{xlsx}", f"xlsx-openpyxl@{xlsx}"),
        f"peak RSS csv @{large} / @{small}": ratio(f"csv-kit@{large}", f"csv-kit@{small}", "peak_rss_mib"),
        f"peak RSS csv-python @{large} / @{small}": ratio(
            f"csv-kit-python@{large}", f"csv-kit-python@{small}", "peak_rss_mib"
        ),
    }
    aims = {
        f"csv kit/copy time @{large}": 3.0,
        f"xlsx kit/openpyxl time @{xlsx}": 1.2,
        f"peak RSS csv @{large} / @{small}": 1.2,
        f"peak RSS csv-python @{large} / @{small}": 1.2,
    }
    print(f"\nmedians over {rounds} round(s)")
    for name, figures in summary.items():
        rss = f"  peak RSS {figures['peak_rss_mib']:6.1f} MiB" if "peak_rss_mib" in figures else ""
        print(f"{name:<24} {figures['seconds']:7.2f} s  {figures['rows_per_second']:9,.0f} rows/s{rss}")
    print()
    for name, value in ratios.items():
        aim = f"  (aim <= {aims[name]})" if name in aims else ""
        print(f"{name:<42} {value:5.2f}{aim}")

    return {
        "benchmark": "reports",
        "started_at": started_at,
        "machine": machine,
        "parameters": {"quick": quick, "rounds": rounds, **sizes, "chunk_size": settings.REPORTS_CHUNK_SIZE},
        "measurements": measurements,
        "summary_medians": summary,
        "ratios": ratios,
        "aims": aims,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.reports", description="Report export speed and memory against the limits."
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"CSV at {QUICK['csv'][0]:,} and {QUICK['csv'][1]:,} rows, XLSX at {QUICK['xlsx']:,}",
    )
    parser.add_argument("--rounds", type=int, help="rounds, each running every variant once (default 1)")
    args = parser.parse_args()

    import django

    # The worker and this process share the report files' folder.
    with tempfile.TemporaryDirectory(prefix="kit-bench-reports-") as folder:
        os.environ.setdefault("REPORTS_ROOT", folder)
        django.setup()
        from bench import harness

        results = run(quick=args.quick, rounds=args.rounds)
    harness.report(results)


if __name__ == "__main__":
    main()
