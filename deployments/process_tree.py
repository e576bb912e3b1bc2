"""The process tree of a local service, owned by the process that started it.

Ray puts every worker in a process group of its own, and a worker's children (HAProxy) in the
worker's group: a signal to the process group of `make run` never reaches them. As a child
subreaper this process inherits every descendant whose parent ends, so it can still find (and
end) all of them, and reaps them as they exit.
"""

from __future__ import annotations

import ctypes
import os
import signal
import time

import psutil

_PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> None:
    """Orphaned descendants are re-parented to this process instead of init (Linux)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def reap(pid: int) -> int | None:
    """Collect every exited child; the exit code of `pid` if it was among them."""
    code = None
    while True:
        try:
            reaped, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return code
        if reaped == 0:
            return code
        if reaped == pid:
            code = os.waitstatus_to_exitcode(status)


def end_descendants(term_grace_s: float = 1.0) -> int:
    """SIGTERM every descendant, SIGKILL those still there after `term_grace_s`; returns how
    many there were. Workers in process groups of their own are included."""
    found = psutil.Process().children(recursive=True)
    for process in found:
        _signal(process, signal.SIGTERM)
    _, alive = psutil.wait_procs(found, timeout=term_grace_s)
    for process in alive:
        _signal(process, signal.SIGKILL)
    psutil.wait_procs(alive, timeout=5)
    reap(-1)
    return len(found)


def wait_for_exit(pid: int, timeout_s: float, poll_s: float = 0.1) -> int | None:
    """Reap children until `pid` exits (its exit code) or `timeout_s` passes (None)."""
    deadline = time.monotonic() + timeout_s
    while True:
        code = reap(pid)
        if code is not None or time.monotonic() >= deadline:
            return code
        time.sleep(poll_s)


def _signal(process: psutil.Process, signum: int) -> None:
    try:
        process.send_signal(signum)
    except psutil.NoSuchProcess:
        pass
