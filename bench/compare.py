"""python -m bench.compare [OLD.json NEW.json]

The headline figures of two runs of a benchmark side by side, with new/old:
every ratio the benchmark reported, its CPU per job where it measured it,
and its RSS growth for the memory benchmark. Without arguments, for each
benchmark, its two latest runs in bench/results/.

Absolute rates are left out on purpose: they move with the machine, and
two runs may not share one. Ratios were measured against a baseline in the
same run, so they travel. Compare runs of the same size (quick with quick):
when the parameters differ, that is printed above the table.
"""

import argparse
import json
import sys
from pathlib import Path

from bench.harness import RESULTS_DIR


def headline(result: dict) -> dict[str, float]:
    """Figure name -> value, from one benchmark's results JSON."""
    figures = {}
    for key, value in result.items():
        if key.startswith("ratios"):
            # "ratios", or "ratios_<what>" where a benchmark reports one kind.
            prefix = "" if key == "ratios" else key.removeprefix("ratios_").replace("_", " ") + ": "
            for name, ratio in value.items():
                if isinstance(ratio, dict):  # {"of_medians": ..., "per_round": {...}} and the like
                    ratio = next(figure for kind, figure in ratio.items() if kind.startswith("of_"))
                figures[prefix + name] = ratio
        elif key == "cpu_ms_per_job_median":
            for variant, parts in value.items():
                figures[f"CPU ms per job: {variant}"] = parts["total"]
        elif key == "rss_kib":
            for variant, memory in value.items():
                figures[f"RSS after/before: {variant} main"] = memory["ratio_main"]
                if memory["ratio_children"]:
                    figures[f"RSS after/before: {variant} children, largest"] = max(memory["ratio_children"])
    return figures


def compare(old_path: Path, new_path: Path) -> None:
    old, new = (json.loads(path.read_text()) for path in (old_path, new_path))
    if old["benchmark"] != new["benchmark"]:
        sys.exit(f"{old_path.name} is {old['benchmark']}, {new_path.name} is {new['benchmark']}: nothing to compare.")
    print(f"\n== {new['benchmark']}: {old['started_at']} -> {new['started_at']} ==")
    for label, result in (("old", old), ("new", new)):
        machine = result["machine"]
        print(f"{label}: {machine['cores']} cores ({machine['cpu']}), load {machine['load_average_at_start']}")
    if old["parameters"] != new["parameters"]:
        print(f"The sizes differ: old {old['parameters']}, new {new['parameters']}")
    old_figures, new_figures = headline(old), headline(new)
    names = [*old_figures, *(name for name in new_figures if name not in old_figures)]
    width = max(len(name) for name in names)
    print(f"{'figure':<{width}}  {'old':>9}  {'new':>9}  {'new/old':>8}")
    for name in names:
        before, after = old_figures.get(name), new_figures.get(name)
        change = f"{after / before:8.2f}" if before and after is not None else f"{'':8}"
        print(f"{name:<{width}}  {_cell(before)}  {_cell(after)}  {change}")


def _cell(value: float | None) -> str:
    return f"{'-':>9}" if value is None else f"{value:9.3f}"


def latest_pairs() -> list[tuple[Path, Path]]:
    """Each benchmark's two latest results files (names sort by time)."""
    runs: dict[str, list[Path]] = {}
    for path in sorted(RESULTS_DIR.glob("*.json")):
        runs.setdefault(json.loads(path.read_text())["benchmark"], []).append(path)
    return [(paths[-2], paths[-1]) for paths in runs.values() if len(paths) >= 2]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__.split("\n\n")[1])
    parser.add_argument("files", nargs="*", type=Path, help="OLD.json NEW.json (default: each benchmark's two latest)")
    args = parser.parse_args()
    if len(args.files) not in (0, 2):
        parser.error("give two results files, or none")
    pairs = [tuple(args.files)] if args.files else latest_pairs()
    if not pairs:
        sys.exit(f"No benchmark has two runs in {RESULTS_DIR}.")
    for old_path, new_path in pairs:
        compare(old_path, new_path)


if __name__ == "__main__":
    main()
