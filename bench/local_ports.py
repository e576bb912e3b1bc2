"""Free TCP ports for the local Ray nodes and servers that the tests and the bench start.

In `bench` because both the benchmarks and the tests start such servers, and the tests (not a
package) import from `bench`, never the other way round; nothing served needs it.
"""

from __future__ import annotations

import socket
import threading

_handed_out: set[int] = set()
_lock = threading.Lock()


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago and that this process has not handed out before.

    A Ray node takes about ten ports; the kernel may offer a port it just released again, and
    `ray start` refuses two components on one port, so each port is handed out once only.
    """
    with _lock:
        while True:
            with socket.socket() as sock:
                sock.bind((host, 0))
                port = sock.getsockname()[1]
            if port not in _handed_out:
                _handed_out.add(port)
                return port
