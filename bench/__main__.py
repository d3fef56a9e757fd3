"""python -m bench throughput [--jobs N] [--rounds R] [--quick]

Needs PostgreSQL and RabbitMQ on loopback (DESIGN.md, "The machine"); uses
its own database (kit_bench) and vhost (kit-bench), recreating the vhost on
every run. Results: the printed table, and bench/results/<timestamp>.json.
"""

import argparse
import os

# Before anything imports Django: the bench process enqueues kit jobs and
# reads every variant's rows through the kit's settings.
os.environ["DJANGO_SETTINGS_MODULE"] = "bench.settings_kit"

QUICK = {"jobs": 1000, "rounds": 3}
FULL = {"jobs": 5000, "rounds": 5}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description="Benchmarks of the kit (not tests).")
    parser.add_argument(
        "benchmark", nargs="?", default="throughput", choices=["throughput"], help="which benchmark (default: throughput)"
    )
    parser.add_argument("--quick", action="store_true", help=f"{QUICK['jobs']:,} jobs x {QUICK['rounds']} rounds (about 2-3 minutes on 2 cores)")
    parser.add_argument("--jobs", type=int, help=f"jobs per variant and round (default {FULL['jobs']:,})")
    parser.add_argument("--rounds", type=int, help=f"rounds, each running every variant once (default {FULL['rounds']})")
    parser.add_argument("--concurrency", type=int, default=2, help="prefork children per worker (default 2)")
    args = parser.parse_args()
    preset = QUICK if args.quick else FULL

    import django

    django.setup()
    from bench import harness, throughput

    results = throughput.run(
        jobs=args.jobs or preset["jobs"], rounds=args.rounds or preset["rounds"], concurrency=args.concurrency
    )
    print(f"\nResults: {harness.write_results(results).relative_to(harness.REPO)}")


if __name__ == "__main__":
    main()
