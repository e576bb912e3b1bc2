"""Where the CPU of a load run went (core-milliseconds per request, by process role), and
the resident memory of the service's processes.

Reads utime + stime of every process under the service's root process (the `ray start`
tree or the baseline's uvicorn) and of the load generator (this process) from /proc, before
and after a run. Processes are named by their role from the command line: HAProxy or Serve's
proxy, the ingress replicas, the model replicas, Ray's own processes (raylet, GCS, controller,
dashboard, agents), the baseline server.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

# (substring of the command line, role); the first match wins.
ROLES = (
    ("haproxy", "proxy (HAProxy)"),
    ("ProxyActor", "proxy (Serve)"),
    ("APIIngress", "ingress replicas"),
    ("SentimentModel", "model replicas"),
    ("uvicorn", "baseline server"),
)


@dataclass(frozen=True)
class _Sample:
    name: str
    cpu_s: float


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds used) of a live process, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # the name may hold spaces and parentheses
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _role(cmdline: str) -> str:
    return next((role for needle, role in ROLES if needle in cmdline), "Ray's own processes")


def _tree(root: int) -> dict[int, _Sample]:
    """Every live process at or under `root`, with its role and CPU seconds so far."""
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            parents[int(entry.name)], cpu[int(entry.name)] = stat
    inside = {root}
    changed = True
    while changed:
        changed = False
        for pid, parent in parents.items():
            if parent in inside and pid not in inside:
                inside.add(pid)
                changed = True
    return {pid: _Sample(_role(_cmdline(pid)), cpu[pid]) for pid in inside if pid in cpu}


class CpuAccount:
    """Snapshot the service tree and this process at `start()`; `per_request(n)` afterwards."""

    def __init__(self, service_root_pid: int) -> None:
        self.service_root_pid = service_root_pid
        self._before: dict[int, _Sample] = {}
        self._self_before = 0.0

    def start(self) -> None:
        self._before = _tree(self.service_root_pid)
        self._self_before = _self_cpu_s()

    def per_request(self, requests: int) -> dict[str, float]:
        """Core-milliseconds per request by role, over the run since `start()`."""
        totals: dict[str, float] = defaultdict(float)
        for pid, sample in _tree(self.service_root_pid).items():
            previous = self._before.get(pid)
            totals[sample.name] += sample.cpu_s - (previous.cpu_s if previous else 0.0)
        totals["load generator"] = _self_cpu_s() - self._self_before
        if requests <= 0:
            return {}
        account = {role: round(seconds * 1000 / requests, 3) for role, seconds in totals.items()}
        account["total"] = round(sum(totals.values()) * 1000 / requests, 3)
        return dict(sorted(account.items()))


def resident_mib(root_pid: int) -> float:
    """Resident memory of every process at or under `root_pid` (MiB; shared pages counted
    in each process, as `ps` does)."""
    total_kib = 0
    for pid in _tree(root_pid):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total_kib += int(line.split()[1])
    return round(total_kib / 1024, 1)


def _self_cpu_s() -> float:
    times = os.times()
    return times.user + times.system
