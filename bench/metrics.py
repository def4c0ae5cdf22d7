"""What a measured action cost, read from /proc: CPU of processes and of the machine, RSS and its peaks, the load.

`metered()` wraps one action and fills a `Meter`; a `Sample` is one measured value with the meter's figures.
"""

from __future__ import annotations

import contextlib
import os
import resource
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any


def process_table() -> dict[int, tuple[int, str]]:
    """Every process on the machine as pid -> (parent pid, command name), from /proc/PID/stat."""
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            with open(f"/proc/{entry.name}/stat") as f:
                text = f.read()
            name = text[text.index("(") + 1 : text.rindex(")")]
            table[int(entry.name)] = (int(text.rsplit(")", 1)[1].split()[1]), name)
    return table


def tree_pids(pid: int) -> list[int]:
    """`pid` and all its descendants (our server forks worker processes), `pid` first."""
    children: dict[int, list[int]] = {}
    for child, (parent, _) in process_table().items():
        children.setdefault(parent, []).append(child)
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        todo.extend(children.get(current, []))
    return pids


def pids_named(name: str) -> list[int]:
    """Pids of the processes whose command name is `name` (e.g. dockerd, whose CPU is the docker client's)."""
    return [pid for pid, (_, comm) in process_table().items() if comm == name]


def proc_status_kib(pid: int, key: str) -> int:
    """A `kB` field of /proc/PID/status (VmRSS, VmHWM, RssAnon), 0 when unreadable."""
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def rss_kib(pids: Iterable[int]) -> int:
    """Summed VmRSS (KiB) of `pids`; those gone count 0."""
    return sum(proc_status_kib(pid, "VmRSS") for pid in pids)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process (all its threads) has used so far, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_by_pid(pids: Iterable[int]) -> dict[int, float]:
    """User + system CPU seconds used so far by each process still alive among `pids`."""
    found = {}
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            found[pid] = cpu_seconds(pid)
    return found


def cpu_of(pids: Iterable[int]) -> float:
    """User + system CPU seconds used so far by the processes still alive among `pids`."""
    return sum(cpu_by_pid(pids).values())


def machine_cpu() -> tuple[float, float]:
    """Busy and iowait CPU seconds of the whole machine so far (all cores), from /proc/stat: other users of this
    shared machine show up as busy time that is neither the server's nor the client's."""
    with open("/proc/stat") as f:
        ticks = [int(n) for n in f.readline().split()[1:]]
    hz = os.sysconf("SC_CLK_TCK")
    idle, iowait = ticks[3], ticks[4]
    return (sum(ticks[:8]) - idle - iowait) / hz, iowait / hz


def own_cpu() -> float:
    """CPU seconds of this process plus its waited-for children (curl, wrk, ab, docker CLI): the client side."""
    return sum(
        r.ru_utime + r.ru_stime
        for r in (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN))
    )


def load_average() -> float:
    """The machine's 1-minute load average (other users of this machine make timings noisy)."""
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def reset_peak_rss(pid: int) -> bool:
    """Reset the process's VmHWM to its current RSS (Linux clear_refs 5); False when not permitted."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def reset_peaks(pid: int) -> None:
    """Reset VmHWM of `pid` and of every descendant (all processes of a server) to its current RSS."""
    for p in tree_pids(pid):
        reset_peak_rss(p)


def peaks_kib(pid: int) -> dict[int, int]:
    """VmHWM (KiB) of `pid` and of every descendant, by pid."""
    return {p: proc_status_kib(p, "VmHWM") for p in tree_pids(pid)}


@dataclass
class Meter:
    """What one measured action cost: wall clock, server CPU (all its processes), client CPU, machine load."""

    wall_s: float = 0.0
    server_cpu_s: float = 0.0
    server_busiest_cpu_s: float = 0.0
    client_cpu_s: float = 0.0
    machine_busy_s: float = 0.0
    machine_iowait_s: float = 0.0
    server_processes: int = 1
    load: float = 0.0


@contextlib.contextmanager
def metered(server_pid: int, client_pids: list[int] | None = None) -> Iterator[Meter]:
    """Measure the enclosed block: wall seconds, CPU of the server's process tree (rooted at `server_pid`) and of
    the client side (this process, its finished children, and `client_pids` such as dockerd)."""
    meter = Meter(load=load_average())
    pids = tree_pids(server_pid)
    extra = client_pids or []
    server_before, client_before, extra_before = cpu_by_pid(pids), own_cpu(), cpu_of(extra)
    busy_before, iowait_before = machine_cpu()
    started = time.perf_counter()
    yield meter
    meter.wall_s = time.perf_counter() - started
    server_after, (busy_after, iowait_after) = cpu_by_pid(pids), machine_cpu()
    spent = [server_after[p] - server_before[p] for p in server_after if p in server_before]
    meter.server_cpu_s = sum(spent)
    meter.server_busiest_cpu_s = max(spent, default=0.0)
    meter.client_cpu_s = own_cpu() - client_before + cpu_of(extra) - extra_before
    meter.machine_busy_s = busy_after - busy_before
    meter.machine_iowait_s = iowait_after - iowait_before
    meter.server_processes = len(pids)


@dataclass
class Sample:
    """One measured value of one metric on one server in one round, with the CPU both sides used meanwhile."""

    metric: str
    server: str
    round: int
    value: float
    wall_s: float
    active_s: float  # time requests were in flight (curl's own times); wall_s also counts starting curl processes
    server_cpu_s: float
    server_busiest_cpu_s: float
    client_cpu_s: float
    machine_busy_s: float
    machine_iowait_s: float
    server_processes: int
    load: float
    sequential: bool  # one request in flight at a time (the curl-driven transfers)
    extra: dict[str, Any] = field(default_factory=dict)
