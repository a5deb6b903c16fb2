"""Readings from /proc for the bench: the gateway's CPU time and memory, and how busy a CPU was."""

from __future__ import annotations

import os
import re
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def process_tree(root: int) -> list[int]:
    """The gateway's pid and its descendants (uvicorn's workers, when server.workers > 1)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    tree, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, ppid in parents.items() if ppid in frontier]
        tree += frontier
    return tree


def cpu_seconds(root: int) -> float:
    """utime + stime of the gateway's processes (every thread included), in seconds."""
    ticks = 0
    for pid in process_tree(root):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5), counted from the state field
    return ticks / CLK_TCK


def memory_mb(root: int) -> dict[str, float]:
    """VmRSS and VmHWM summed over the gateway's processes, MB (exact for one process)."""
    totals = {"rss_mb": 0.0, "hwm_mb": 0.0}
    for pid in process_tree(root):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for key, name in (("rss_mb", "VmRSS"), ("hwm_mb", "VmHWM")):
            match = re.search(rf"^{name}:\s+(\d+) kB", status, re.M)
            if match:
                totals[key] += int(match.group(1)) / 1024
    return {k: round(v, 1) for k, v in totals.items()}


def cpu_times(cpu: str) -> dict[str, float]:
    """One CPU's time from /proc/stat, seconds: `tasks` (user, nice, system: what processes ran, which their own
    utime/stime account for), `interrupts` (irq, softirq: loopback networking lands here, charged to no process)
    and `steal` (taken by the hypervisor)."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{cpu} "):
            v = [int(x) for x in line.split()[1:9]]
            return {
                "tasks": (v[0] + v[1] + v[2]) / CLK_TCK,
                "interrupts": (v[5] + v[6]) / CLK_TCK,
                "steal": v[7] / CLK_TCK,
            }
    return {"tasks": 0.0, "interrupts": 0.0, "steal": 0.0}


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
