"""python -m bench [throughput|peers|tracking|enqueue|latency|priorities|memory|images|mail|reports|search|
                   embedded|all] [--quick]

Needs PostgreSQL and RabbitMQ on loopback (DESIGN.md, "The machine"). Each
benchmark runs the kit beside its baselines in the same run and prints
ratios; results are also written to bench/results/<timestamp>.json. Each
runs in a process of its own (python -m bench.<name>), because each picks
its own database and vhost before Django starts.
"""

import argparse
import subprocess
import sys
import time

BENCHMARKS = [
    "throughput",
    "peers",
    "tracking",
    "enqueue",
    "latency",
    "priorities",
    "memory",
    "images",
    "mail",
    "reports",
    "search",
    "embedded",
]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description="Benchmarks of the kit (not tests).")
    parser.add_argument(
        "benchmark", nargs="?", default="all", choices=[*BENCHMARKS, "all"], help="which benchmark (default: all)"
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: every benchmark in a few minutes on 2 cores")
    args = parser.parse_args()

    failed = []
    for name in BENCHMARKS if args.benchmark == "all" else [args.benchmark]:
        print(f"\n== {name} ==", flush=True)
        command = [sys.executable, "-m", f"bench.{name}", *(["--quick"] if args.quick else [])]
        began = time.monotonic()
        if subprocess.run(command).returncode != 0:
            failed.append(name)
        print(f"({name}: {time.monotonic() - began:.0f} s)", flush=True)
    if failed:
        sys.exit(f"Failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
