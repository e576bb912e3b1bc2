"""The processes of one bulk run: peak resident memory and CPU seconds by role.

A sampler thread walks the process tree under the `python -m bulk score` command (its driver,
the private Ray instance's raylet and GCS, the model actors, read tasks) every half second:
the peak of the summed resident memory is the run's memory figure, and each process's last
seen CPU time, summed by role, says where the run's CPU went.
"""

from __future__ import annotations

import threading
from collections import defaultdict

import psutil

# (substring of the command line, role); the first match wins.
ROLES = (
    ("BatchScorer", "model actors"),
    ("ray::", "other Ray workers (reads)"),
    ("-m bulk", "driver"),
    ("/raylet ", "raylet"),
    ("gcs_server", "GCS"),
)
SAMPLE_S = 0.5


def role(cmdline: str) -> str:
    return next((name for needle, name in ROLES if needle in cmdline), "other Ray processes")


class ProcessTreeSampler:
    def __init__(self, root_pid: int):
        self.root = psutil.Process(root_pid)
        self.peak_rss_bytes = 0
        self._cpu: dict[int, tuple[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "ProcessTreeSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def cpu_by_role(self) -> dict[str, float]:
        totals: dict[str, float] = defaultdict(float)
        for name, seconds in self._cpu.values():
            totals[name] += seconds
        return {name: round(seconds, 1) for name, seconds in sorted(totals.items())}

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            self._sample()

    def _sample(self) -> None:
        try:
            processes = [self.root, *self.root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        rss = 0
        for process in processes:
            try:
                with process.oneshot():
                    rss += process.memory_info().rss
                    times = process.cpu_times()
                    # A worker's title changes as Ray gives it work (ray::IDLE -> the actor).
                    name = role(" ".join(process.cmdline()))
                    self._cpu[process.pid] = (name, times.user + times.system)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        self.peak_rss_bytes = max(self.peak_rss_bytes, rss)
