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
                   csv.writer with no conversion: Python's floor (not in
                   quick mode)
  xlsx   kit       reports.report_generate through a worker
         openpyxl  openpyxl's write-only mode fed the same queryset, with only
                   what openpyxl needs (UUIDs as text, naive datetimes)

Variants run back to back in each round (1 round unless --rounds says more),
so load from elsewhere lands on all of them alike; figures are medians and
ratios are ratios of medians. The kit's time is its job's started_at to
finished_at as the worker recorded them (count, query, write, move into
place; worker start-up and publishing are outside); the limits are timed
around the call. Each CSV kit run gets a fresh worker, so the child's peak
RSS (VmHWM) is that report's alone.

XLSX runs as pairs, the kit and openpyxl back to back, which goes first
alternating (quick: 4 pairs of 5,000 rows; full: 4 of 50,000): one pair of
10,000 rows, each side a single 1.3 s sample, moved with the machine
(BENCHMARKS.md, "Reports: XLSX against openpyxl"); pairs put a drift on
both sides, and their median leaves a burst out. The kit's reports all go
through one worker, up and idle before the first pair, so its start-up
runs beside neither side. Each side's first run is its first in its
process (openpyxl's first use here, a fresh pool child's first job), the
later ones warm, as a worker's child is for all but the first of the up to
1,000 jobs `manage.py worker` gives it. Besides time, CPU seconds: this
process's during a limit, the pool child's from before the kit's job is
published until it has ended (the database's in neither). Both sides are
CPU-bound, so a time ratio far from the CPU ratio is the machine, not the
code. The XLSX peak RSS is the child's over its reports.

Full: CSV at 100,000 and 1,000,000 rows; quick: CSV at 10,000 and 100,000.
The rows are Job rows made by generate_series, 5,000 per day from
2025-01-01, a tenth failed with an error message (some formula-like, so
neutralisation has work to do).

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

# A report's period is whole days: 5,000 rows a day lets an XLSX pair be
# 5,000 rows, and keeps a million rows (200 days) within jobs.export's
# 366-day limit.
ROWS_PER_DAY = 5_000
FIRST_DAY = date(2025, 1, 1)
QUICK = {"csv": (10_000, 100_000), "xlsx": 5_000, "xlsx_pairs": 4}
FULL = {"csv": (100_000, 1_000_000), "xlsx": 50_000, "xlsx_pairs": 4}
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


class _Stopwatch:
    """Wall and CPU seconds of this process from its creation to read()."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def read(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall, time.process_time() - self.cpu


def copy_csv(rows: int, path: Path) -> tuple[float, float]:
    """PostgreSQL's COPY of the report's own query, streamed to a file."""
    import psycopg
    from django.db import connection

    _, queryset = _queryset(rows)
    sql, params = queryset.query.sql_with_params()
    with connection.cursor() as cursor:
        statement = psycopg.ClientCursor(cursor.connection).mogrify(sql, params)
    clock = _Stopwatch()
    with connection.cursor() as cursor, open(path, "wb") as out:
        with cursor.cursor.copy(f"COPY ({statement}) TO STDOUT WITH CSV HEADER") as copy:
            for data in copy:
                out.write(data)
    return clock.read()


def csv_module(rows: int, path: Path) -> tuple[float, float]:
    """The same queryset, in chunks, into csv.writer: no conversion at all."""
    import csv

    from django.conf import settings

    report, queryset = _queryset(rows)
    clock = _Stopwatch()
    with open(path, "w", newline="", buffering=1 << 20) as out:
        writer = csv.writer(out)
        writer.writerow([column.heading for column in report.columns])
        writer.writerows(queryset.iterator(chunk_size=settings.REPORTS_CHUNK_SIZE))
    return clock.read()


def bare_openpyxl(rows: int, path: Path) -> tuple[float, float]:
    """openpyxl write-only fed the same rows, converted only as far as
    openpyxl requires (it refuses UUIDs and time-zone-aware datetimes)."""
    from datetime import datetime
    from uuid import UUID

    from django.conf import settings
    from openpyxl import Workbook

    report, queryset = _queryset(rows)
    clock = _Stopwatch()
    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet("Jobs")
    sheet.append([column.heading for column in report.columns])
    for row in queryset.iterator(chunk_size=settings.REPORTS_CHUNK_SIZE):
        sheet.append(
            [str(v) if isinstance(v, UUID) else v.replace(tzinfo=None) if isinstance(v, datetime) else v for v in row]
        )
    workbook.save(path)
    return clock.read()


def _pool_child(main_pid: int) -> int:
    children = Path(f"/proc/{main_pid}/task/{main_pid}/children").read_text().split()
    if len(children) != 1:
        raise RuntimeError(f"expected one pool child of worker {main_pid}, found {children}")
    return int(children[0])


def _cpu_seconds(pid: int) -> float:
    """CPU time of a process's threads so far, from the scheduler's own
    count in nanoseconds (/proc's tick counts are 10 ms coarse)."""
    return sum(int((task / "schedstat").read_text().split()[0]) for task in Path(f"/proc/{pid}/task").iterdir()) / 1e9


def _child_peak_rss_kib(main_pid: int) -> int:
    for line in Path(f"/proc/{_pool_child(main_pid)}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc status")


def _worker(name: str, log_path: Path, env: dict | None = None):
    from bench import harness

    return harness.Worker(
        name=name, settings_module="bench.settings_kit", queue="reports", concurrency=1, log_path=log_path, env=env
    )


def _report_job(worker, run, rows: int, format: str, *, interval: float = 0.2, cpu_from: float | None = None) -> dict:
    """Wait for `run`'s job on `worker`; its seconds, the child's peak RSS
    so far, and the file's size (the file is then deleted). With
    `cpu_from` (the pool child's CPU seconds before the job was published),
    also the CPU seconds the child spent since."""
    from bench import harness
    from jobs.models import JobStatus
    from reports.models import ReportRun

    job = run.job

    def done() -> bool:
        worker.check_alive()
        job.refresh_from_db()
        return job.is_finished

    what = f"the {format} report ({worker.log_path})"
    harness.wait_until(done, timeout=120 + rows * SECONDS_PER_ROW_LIMIT, what=what, interval=interval)
    peak = _child_peak_rss_kib(worker.process.pid)
    if job.status != JobStatus.SUCCESS:
        raise RuntimeError(f"The {format} report ended {job.status}: {job.error} ({worker.log_path})")
    run = ReportRun.objects.get(pk=run.pk)
    if run.rows != rows:
        raise RuntimeError(f"The report wrote {run.rows} rows, not {rows}.")
    result = {
        "seconds": (job.finished_at - job.started_at).total_seconds(),
        "peak_rss_mib": peak / 1024,
        "bytes": run.size,
    }
    if cpu_from is not None:
        result["cpu_seconds"] = _cpu_seconds(_pool_child(worker.process.pid)) - cpu_from
    run.file.delete(save=False)  # a million rows is a quarter of a gigabyte
    return result


def _request(rows: int, format: str):
    from reports import services

    return services.report_request(report_type="jobs.export", format=format, params=export_params(rows))


def kit(rows: int, format: str, log_path: Path, env: dict | None = None) -> dict:
    """A report run through a fresh worker; seconds and the child's peak RSS."""
    run = _request(rows, format)
    with _worker(f"reports-{format}-{rows}", log_path, env) as worker:
        return _report_job(worker, run, rows, format)


def xlsx_pairs(rows: int, pairs: int, scratch: Path, log_path: Path):
    """(openpyxl, kit) figures for each pair, openpyxl first in the odd
    pairs and the kit first in the even ones. The kit's reports go through
    one worker, up and idle before the first pair, so that its start-up
    (imports, the pool's fork) never runs beside either side."""
    from config.celery_app import app

    with _worker(f"reports-xlsx-{rows}", log_path) as worker:
        worker.wait_until_up(app)

        def the_kit() -> dict:
            child = _pool_child(worker.process.pid)
            cpu = _cpu_seconds(child)
            # Polled often: the pairs are short, and the wait is wall time only.
            figures = _report_job(worker, _request(rows, "xlsx"), rows, "xlsx", interval=0.05, cpu_from=cpu)
            if _pool_child(worker.process.pid) != child:
                raise RuntimeError(f"The pool child was replaced during an XLSX report ({worker.log_path}).")
            return figures

        def the_limit() -> dict:
            return _measure_limit(bare_openpyxl, rows, scratch, "xlsx")

        for number in range(pairs):
            if number % 2 == 0:
                limit, kit_figures = the_limit(), the_kit()
            else:
                kit_figures, limit = the_kit(), the_limit()
            yield limit, kit_figures


def _measure_limit(function, rows: int, scratch: Path, suffix: str) -> dict:
    path = scratch / f"limit-{function.__name__}-{rows}.{suffix}"
    seconds, cpu = function(rows, path)
    size = path.stat().st_size
    path.unlink()
    return {"seconds": seconds, "cpu_seconds": cpu, "bytes": size}


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
    xlsx_pair_ratios: list[float] = []
    xlsx_pair_cpu_ratios: list[float] = []

    def record(round_number: int, name: str, rows: int, figures: dict) -> None:
        figures = {"round": round_number, "variant": name, "rows": rows, **figures}
        figures["rows_per_second"] = rows / figures["seconds"]
        measurements.append(figures)
        runs.setdefault((name, rows), []).append(figures)
        rss = f"  peak RSS {figures['peak_rss_mib']:6.1f} MiB" if "peak_rss_mib" in figures else ""
        cpu = f"  CPU {figures['cpu_seconds']:5.2f} s" if "cpu_seconds" in figures else ""
        print(
            f"round {round_number}  {name:<15} {rows:>9,} rows  {figures['seconds']:7.2f} s{cpu}  "
            f"{figures['rows_per_second']:9,.0f} rows/s  {figures['bytes'] / 2**20:7.1f} MiB{rss}",
            flush=True,
        )

    # Each round runs every variant back to back, so load from whatever else
    # runs on the machine lands on all of them alike.
    python_csv = {"REPORTS_CSV_WITH_COPY": "false"}
    for number in range(1, rounds + 1):
        for rows in sizes["csv"]:
            record(number, "csv-copy", rows, _measure_limit(copy_csv, rows, scratch, "csv"))
            if not quick:  # Python's floor, no aim reads it: 6 s of a quick run
                record(number, "csv-module", rows, _measure_limit(csv_module, rows, scratch, "csv"))
            record(number, "csv-kit", rows, kit(rows, "csv", scratch / f"worker-csv-{rows}-{number}.log"))
            log = scratch / f"worker-csv-python-{rows}-{number}.log"
            record(number, "csv-kit-python", rows, kit(rows, "csv", log, python_csv))
        rows = sizes["xlsx"]
        log = scratch / f"worker-xlsx-{rows}-{number}.log"
        for limit, kit_figures in xlsx_pairs(rows, sizes["xlsx_pairs"], scratch, log):
            record(number, "xlsx-openpyxl", rows, limit)
            record(number, "xlsx-kit", rows, kit_figures)
            xlsx_pair_ratios.append(kit_figures["seconds"] / limit["seconds"])
            xlsx_pair_cpu_ratios.append(kit_figures["cpu_seconds"] / limit["cpu_seconds"])

    def median(name: str, rows: int, figure: str) -> float:
        return statistics.median(run[figure] for run in runs[(name, rows)])

    summary = {
        f"{name}@{rows}": {
            "seconds": median(name, rows, "seconds"),
            "rows_per_second": rows / median(name, rows, "seconds"),
            **({"cpu_seconds": median(name, rows, "cpu_seconds")} if "cpu_seconds" in found[0] else {}),
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
        **(
            {}
            if quick
            else {f"csv kit-python/csv-module time @{large}": ratio(f"csv-kit-python@{large}", f"csv-module@{large}")}
        ),
        f"xlsx kit/openpyxl time @{xlsx}": {
            "of_medians": ratio(f"xlsx-kit@{xlsx}", f"xlsx-openpyxl@{xlsx}"),
            "per_pair": harness.spread(xlsx_pair_ratios),
        },
        f"xlsx kit/openpyxl CPU @{xlsx}": {
            "of_medians": ratio(f"xlsx-kit@{xlsx}", f"xlsx-openpyxl@{xlsx}", "cpu_seconds"),
            "per_pair": harness.spread(xlsx_pair_cpu_ratios),
        },
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
        if isinstance(value, dict):
            pairs = value["per_pair"]
            aim += f"  (per pair {pairs['min']:.2f} - {pairs['max']:.2f}, median {pairs['median']:.2f})"
            value = value["of_medians"]
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
        help=(
            f"CSV at {QUICK['csv'][0]:,} and {QUICK['csv'][1]:,} rows, "
            f"XLSX {QUICK['xlsx_pairs']} pairs of {QUICK['xlsx']:,}"
        ),
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
