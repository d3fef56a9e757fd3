"""python -m bench [throughput|images|mail|reports|all] [--quick]

Needs PostgreSQL and RabbitMQ on loopback (DESIGN.md, "The machine"); uses
its own databases and vhosts, recreated on every run. Each benchmark runs the
kit beside its baselines in the same run and prints ratios; results are also
written to bench/results/<timestamp>.json. Each module can run alone too:
python -m bench.images --quick.
"""

import argparse
import importlib
import os

# Before anything imports Django: the bench process enqueues kit jobs and
# reads every variant's rows through the kit's settings.
os.environ["DJANGO_SETTINGS_MODULE"] = "bench.settings_kit"

# Each module has run(*, quick: bool) -> dict.
BENCHMARKS = ["throughput", "images", "mail", "reports"]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description="Benchmarks of the kit (not tests).")
    parser.add_argument(
        "benchmark", nargs="?", default="all", choices=[*BENCHMARKS, "all"], help="which benchmark (default: all)"
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: every benchmark in a few minutes on 2 cores")
    args = parser.parse_args()

    import django

    django.setup()
    from bench import harness

    names = BENCHMARKS if args.benchmark == "all" else [args.benchmark]
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        if not hasattr(module, "run"):
            continue
        print(f"\n== {name} ==")
        results = module.run(quick=args.quick)
        print(f"\nResults: {harness.write_results(results).relative_to(harness.REPO)}")


if __name__ == "__main__":
    main()
