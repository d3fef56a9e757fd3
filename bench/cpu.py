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


@dataclass(frozen=True)
class Snapshot:
    """CPU seconds so far of each process of interest, under the part of the
    stack it belongs to: (pid, part) -> (seconds, parent pid)."""

    parts: tuple[str, ...]
    seconds: dict[tuple[int, str], tuple[float, int]]

    def __getitem__(self, part: str) -> float:
        return sum(seconds for (_, of), (seconds, _) in self.seconds.items() if of == part)


def snapshot(
    *worker_pids: int, servers: tuple[str, ...] = ("postgresql", "rabbitmq"), databases: tuple[str, ...] | None = None
) -> Snapshot:
    """CPU seconds so far of the worker processes with these pids ("worker
    main"), of all their descendants ("worker children": a prefork pool, a
    cluster's sentinel and workers, a child forked per job), and of the
    processes of each of the `servers` (keys of SERVERS). With `databases`,
    PostgreSQL counts only what serves them (_postgresql_share), so that
    other users of a shared server stay out; a backend that closes between
    two snapshots is then not counted (it undercounts a client that opens a
    connection per job)."""
    processes = [p for path in Path("/proc").glob("[0-9]*/stat") if (p := _read(path)) is not None]
    roots = set(worker_pids)
    children: dict[int, list[_Process]] = {}
    for process in processes:
        children.setdefault(process.parent, []).append(process)
    seconds: dict[tuple[int, str], tuple[float, int]] = {}
    for process in processes:
        if process.pid in roots:
            seconds[process.pid, "worker main"] = (process.own, process.parent)
            seconds[process.pid, "worker children"] = (process.reaped_children, process.parent)
            pending = list(children.get(process.pid, ()))
            while pending:
                descendant = pending.pop()
                seconds[descendant.pid, "worker children"] = (
                    descendant.own + descendant.reaped_children,
                    descendant.parent,
                )
                pending.extend(children.get(descendant.pid, ()))
    for process in processes:
        for server in servers:
            if process.name != SERVERS[server] or (process.pid, "worker children") in seconds:
                continue
            if server == "postgresql" and databases is not None:
                if (counted := _postgresql_share(process, databases)) is not None:
                    seconds[process.pid, server] = (counted, process.parent)
            else:
                seconds[process.pid, server] = (process.own + process.reaped_children, process.parent)
    return Snapshot(("worker main", "worker children", *servers), seconds)


# PostgreSQL's own processes, which work for every database (the WAL writer
# flushes every commit), as their titles name them.
_POSTGRESQL_SHARED = {
    "checkpointer",
    "background writer",
    "walwriter",
    "autovacuum launcher",
    "logical replication launcher",
    "archiver",
    "stats collector",
}


def _postgresql_share(process: _Process, databases: tuple[str, ...]) -> float | None:
    """CPU seconds of a PostgreSQL process that count for work on
    `databases`, from its title ("postgres: 15/main: USER DATABASE HOST
    STATE"): a backend of one of them, or a shared server process; the
    postmaster's own time (it forks every backend) but not the backends it
    reaped, which on a shared server are mostly other people's. None: a
    backend of another database."""
    try:
        title = Path(f"/proc/{process.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return None
    if not title.startswith("postgres: "):
        return process.own  # the postmaster
    rest = title.split(": ", 2)[-1]
    words = rest.split()
    if rest in _POSTGRESQL_SHARED or (len(words) >= 2 and (words[1] in databases or words[-1] in databases)):
        return process.own + process.reaped_children
    return None


def per_item_ms(before: Snapshot, after: Snapshot, items: int) -> dict[str, float]:
    """Milliseconds of CPU per item for each part, and their total.

    Process by process, so that what others run on a shared machine does not
    leak in: a process that exited in between counts through the parent
    that reaped it (a PostgreSQL backend through the postmaster, a pool
    child through the worker), and a process that appeared counts only if it
    belongs to the workers or was forked by a server (a new PostgreSQL
    backend), never, say, another user's `rabbitmqctl`, whose Erlang VM
    is also named beam.smp."""
    costs = dict.fromkeys(after.parts, 0.0)
    started = {pid for pid, _ in before.seconds}
    for (pid, part), (seconds, parent) in after.seconds.items():
        if (pid, part) in before.seconds:
            costs[part] += seconds - before.seconds[pid, part][0]
        elif part.startswith("worker") or parent in started:
            costs[part] += seconds
    costs = {part: 1000 * value / items for part, value in costs.items()}
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
