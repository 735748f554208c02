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
    return {"nproc": len(os.sched_getaffinity(0)), "cpu_count": os.cpu_count(), "cpu_model": model,
            "mem_total_gib": round(mem_kib / 2**20, 1)}
