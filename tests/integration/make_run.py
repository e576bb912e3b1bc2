"""`make run` as an operator starts it, in a session of its own so that every process of the
service (Ray's workers and HAProxy in process groups of their own included) can be found by
its session id, and on free ports with its own SQLite file, because the machine is shared.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

from bench.local_ports import free_port
from bench.ray_auth import ray_process_env

REPO_ROOT = Path(__file__).resolve().parents[2]
DASHBOARD_LINE = re.compile(r"View the dashboard at \S*?(http://[\d.]+:\d+)")


@dataclass(frozen=True)
class Listener:
    ip: str
    port: int
    pid: int
    name: str


class MakeRun:
    def __init__(self, workdir: Path, *, port: int | None = None) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.env = ray_process_env(
            DATABASE_URL=f"sqlite+aiosqlite:///{workdir / 'sentiment.db'}",
            SERVE_HTTP_PORT=str(self.port),
            RAY_SERVE_HAPROXY_STATS_PORT=str(free_port()),
            RAY_SERVE_HAPROXY_METRICS_PORT=str(free_port()),
            RAY_SERVE_FALLBACK_PROXY_HTTP_PORT=str(free_port()),
        )
        self.env.pop("PYTHONPATH")  # the installed project is what `make run` relies on
        self.env.pop("RAY_ADDRESS", None)
        self.process: subprocess.Popen | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.workdir / f"make-run-{self.starts}.log"

    def start(self, timeout_s: float = 300) -> MakeRun:
        self.starts += 1
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(["make", "run"], cwd=REPO_ROOT, env=self.env,
                                            stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"make run exited {self.process.returncode}: {self.output()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/health", timeout=5).status_code == 200:
                    return self
            time.sleep(1)
        raise TimeoutError(f"{self.url}/health not 200 after {timeout_s}s: {self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    @property
    def dashboard_url(self) -> str:
        found = DASHBOARD_LINE.search(re.sub(r"\x1b\[[0-9;]*m", "", self.log.read_text()))
        assert found, f"no dashboard address in make run's output: {self.output()}"
        return found.group(1)

    # --- the processes and sockets of the service ------------------------------------------

    @property
    def session(self) -> int:
        assert self.process is not None
        return self.process.pid

    def processes(self) -> list[psutil.Process]:
        if self.process is not None:
            self.process.poll()  # reap make itself
        found = []
        for process in psutil.process_iter(["pid"]):
            with contextlib.suppress(psutil.Error, ProcessLookupError):  # it just exited
                if os.getsid(process.pid) == self.session and (
                        process.status() != psutil.STATUS_ZOMBIE):
                    found.append(process)
        return found

    def serve_run_pid(self) -> int:
        """`python .venv/bin/serve run ...`, the process a supervisor would signal."""
        (pid,) = [p.pid for p in self.processes()
                  if [Path(arg).name for arg in p.cmdline()[1:3]] == ["serve", "run"]]
        return pid

    def listeners(self) -> list[Listener]:
        names = {p.pid: _name(p) for p in self.processes()}
        return [Listener(c.laddr.ip, c.laddr.port, c.pid, names[c.pid])
                for c in psutil.net_connections(kind="tcp")
                if c.status == psutil.CONN_LISTEN and c.pid in names]

    def port_is_free(self) -> bool:
        return not any(c.status == psutil.CONN_LISTEN and c.laddr.port == self.port
                       for c in psutil.net_connections(kind="tcp"))

    # --- stopping ---------------------------------------------------------------------------

    def signal_group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.session, signum)

    def wait_gone(self, timeout_s: float) -> float | None:
        """Seconds until no process of the session is left and the port is free; None if that
        did not happen within `timeout_s`."""
        start = time.monotonic()
        while time.monotonic() - start < timeout_s:
            if not self.processes() and self.port_is_free():
                return time.monotonic() - start
            time.sleep(0.1)
        return None

    def kill_leftovers(self) -> None:
        """Whatever is left of this session only (a failed test must not leak a service)."""
        for process in self.processes():
            with contextlib.suppress(psutil.Error):
                process.send_signal(signal.SIGKILL)
        if self.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=10)


def _name(process: psutil.Process) -> str:
    with contextlib.suppress(psutil.Error):
        return " ".join(process.cmdline())[:100] or process.name()
    return "?"
