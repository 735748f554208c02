"""A process's memory and CPU time from /proc (Linux; psutil is not a dependency).

>>> import os
>>> memory_kib(os.getpid())["VmRSS"] > 0 and cpu_seconds(os.getpid()) >= 0
True
"""

from __future__ import annotations

import os

_TICKS = os.sysconf("SC_CLK_TCK")


def memory_kib(pid: int) -> dict[str, int]:
    """``VmRSS`` (resident now) and ``VmHWM`` (peak resident) in KiB; empty once the process is gone."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    name, value = line.split(":", 1)
                    out[name] = int(value.split()[0])
    except OSError:
        pass
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process has used so far (its threads included); 0.0 once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # After "pid (comm)": field 3 is state, so utime and stime (fields 14, 15) are at 11 and 12.
    return (int(fields[11]) + int(fields[12])) / _TICKS


def machine() -> dict[str, object]:
    """What the figures were measured on."""
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_kib = 0
    try:
        with open("/proc/meminfo") as fh:
            mem_kib = int(fh.readline().split()[1])
    except OSError:
        pass
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "mem_total_gib": round(mem_kib / 2**20, 1),
    }


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, all cores, from /proc/stat (steal counts as busy)."""
    with open("/proc/stat") as fh:
        fields = [int(x) for x in fh.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])  # guest time is already inside user
    return (total - idle) / _TICKS, total / _TICKS


class CpuShare:
    """How busy the machine was between ``start()`` and ``stop()``, and how much of that was *not* the given processes.

    On a shared VM that is the first thing to read next to a rate: another
    tenant's load lowers every figure of the run it overlaps.
    """

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self._machine = machine_cpu()
        self._procs = {name: cpu_seconds(pid) for name, pid in pids.items()}

    def stop(self, known: dict[str, float] | None = None) -> dict[str, float]:
        """``known``: CPU seconds of processes that have exited since (they can no longer be read from /proc)."""
        busy0, total0 = self._machine
        busy1, total1 = machine_cpu()
        cores = len(os.sched_getaffinity(0))
        wall = (total1 - total0) / max(os.cpu_count() or 1, 1)
        if wall <= 0:
            return {}
        ours = {name: (cpu_seconds(pid) - self._procs[name]) / wall for name, pid in self.pids.items()}
        ours.update({name: seconds / wall for name, seconds in (known or {}).items()})
        machine_busy = (busy1 - busy0) / wall
        return {
            "machine_busy_cores": round(machine_busy, 2),
            "cores": cores,
            **{f"{name}_cores": round(v, 2) for name, v in ours.items()},
            "other_processes_cores": round(max(0.0, machine_busy - sum(ours.values())), 2),
        }


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """CPU seconds per kind of thread (``comm`` without its number; librdkafka's are ``rdk:main``, ``rdk:broker``), summed."""
    out: dict[str, float] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as fh:
                text = fh.read()
        except OSError:
            continue
        name = text[text.index("(") + 1 : text.rindex(")")].rstrip("0123456789-")
        if name.startswith("rdk:broker"):
            name = "rdk:broker"  # one per broker connection and client: rdk:broker1, rdk:broker111, ...
        fields = text.rsplit(")", 1)[1].split()
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / _TICKS
    return out
