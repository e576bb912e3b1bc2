"""Which process holds a TCP port: the one line a start prints instead of a failure deep in
Ray's logs ("HAProxy crashed during startup ... Address already in use")."""

from __future__ import annotations

import errno
import socket

import psutil

WILDCARDS = {"0.0.0.0", "::", ""}


def holder(host: str, port: int) -> str | None:
    """A description of what keeps `host:port` from being bound, or None when it is free."""
    if _bindable(host, port):
        return None
    for conn in _listeners():
        if conn.laddr.port == port and (conn.laddr.ip in WILDCARDS | {host} or host in WILDCARDS):
            return f"pid {conn.pid} ({_command(conn.pid)}) listens on {_address(conn.laddr)}"
    return "a process this user cannot see"


def taken_ports_message(ports: dict[str, tuple[str, int]]) -> str | None:
    """One line naming every port of `ports` ({what: (host, port)}) that is taken, and by whom."""
    taken = []
    for what, (host, port) in ports.items():
        found = holder(host, port)
        if found:
            taken.append(f"{what} port {port} is taken: {found}")
    return "; ".join(taken) or None


def _bindable(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind
        try:
            sock.bind((host if host else "0.0.0.0", port))
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def _listeners() -> list:
    try:
        return [c for c in psutil.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN]
    except psutil.AccessDenied:
        return []


def _command(pid: int | None) -> str:
    if pid is None:
        return "unknown process"
    try:
        return " ".join(psutil.Process(pid).cmdline())[:120] or psutil.Process(pid).name()
    except psutil.Error:
        return "exited"


def _address(laddr) -> str:
    return f"[{laddr.ip}]:{laddr.port}" if ":" in laddr.ip else f"{laddr.ip}:{laddr.port}"
