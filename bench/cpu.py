"""CPU time spent by each part of the stack while a worker runs a batch of
jobs: the worker's main process, its pool children, PostgreSQL and RabbitMQ,
read from /proc (Linux) before and after.

On a shared machine a rate moves with whatever else runs there, while the
CPU time a job costs each process moves much less, and it says where the
time goes: in the worker, in the database or in the broker.

Each figure is user plus system time, and includes the children a process
has reaped (`cutime`, `cstime`): a pool child the worker replaced, or a
PostgreSQL backend that closed its connection inside the window, still
counts.
"""

import os
import statistics
from dataclasses import dataclass
from pathlib import Path

PARTS = ("worker main", "worker children", "postgresql", "rabbitmq")

# What the kernel names the server processes (/proc/PID/comm).
SERVERS = {"postgresql": "postgres", "rabbitmq": "beam.smp", "redis": "redis-server"}

_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class _Process:
    pid: int
    name: str
    parent: int
    own: float  # seconds of CPU, user + system
    reaped_children: float


def _read(stat_path: Path) -> _Process | None:
    try:
        text = stat_path.read_text()
    except OSError:  # it exited while we looked
        return None
    # The name is in parentheses and may itself hold spaces or parentheses.
    name = text[text.index("(") + 1 : text.rindex(")")]
    fields = text[text.rindex(")") + 2 :].split()
    # Fields from the third on (proc(5)): ppid is the 4th, utime..cstime the 14th to 17th.
    parent = int(fields[1])
    utime, stime, cutime, cstime = (int(value) / _TICKS_PER_SECOND for value in fields[11:15])
    return _Process(int(text.split(None, 1)[0]), name, parent, utime + stime, cutime + cstime)


def process_seconds(pid: int) -> float:
    """CPU seconds so far of one process (not of its children)."""
    if (process := _read(Path(f"/proc/{pid}/stat"))) is None:
        raise RuntimeError(f"No process {pid}.")
    return process.own


def snapshot(*worker_pids: int, servers: tuple[str, ...] = ("postgresql", "rabbitmq")) -> dict[str, float]:
    """CPU seconds so far of the worker processes with these pids ("worker
    main"), of all their descendants ("worker children": a prefork pool, a
    cluster's sentinel and workers, a child forked per job), and of each of
    the `servers` (keys of SERVERS)."""
    processes = [p for path in Path("/proc").glob("[0-9]*/stat") if (p := _read(path)) is not None]
    roots = set(worker_pids)
    children: dict[int, list[_Process]] = {}
    for process in processes:
        children.setdefault(process.parent, []).append(process)
    totals = dict.fromkeys(("worker main", "worker children", *servers), 0.0)
    for process in processes:
        if process.pid in roots:
            totals["worker main"] += process.own
            totals["worker children"] += process.reaped_children
            pending = list(children.get(process.pid, ()))
            while pending:
                descendant = pending.pop()
                totals["worker children"] += descendant.own + descendant.reaped_children
                pending.extend(children.get(descendant.pid, ()))
        elif process.pid not in roots:
            for server in servers:
                if process.name == SERVERS[server]:
                    totals[server] += process.own + process.reaped_children
    return totals


def per_item_ms(before: dict[str, float], after: dict[str, float], items: int) -> dict[str, float]:
    """Milliseconds of CPU per item for each part, and their total."""
    costs = {part: 1000 * (after[part] - before[part]) / items for part in before}
    return {**costs, "total": sum(costs.values())}


def median(costs: list[dict[str, float]]) -> dict[str, float]:
    """Per part, the median over runs of per_item_ms results."""
    return {part: statistics.median(cost[part] for cost in costs) for part in costs[0]}


def print_table(summary: dict[str, dict[str, float]], *, unit: str, baseline: str) -> None:
    """A row per variant of median CPU ms per `unit`, a column per part (the
    keys of per_item_ms or the like, "total" last), and each total over the
    `baseline` variant's."""
    label = f"CPU ms per {unit}, median"
    width = max(len(label), *(len(name) for name in summary))
    columns = list(next(iter(summary.values())))
    cell = max(len(column) for column in columns) + 2
    print(f"{label:<{width}}" + "".join(f"{column:>{cell}}" for column in columns) + f"{'x ' + baseline:>10}")
    for name, cost in summary.items():
        cells = "".join(f"{cost[column]:>{cell}.3f}" for column in columns)
        print(f"{name:<{width}}{cells}{cost['total'] / summary[baseline]['total']:>10.2f}")
