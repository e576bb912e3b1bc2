"""A TCP proxy the tests control, to take a database away from a running service and give it back.

The database server is shared, so a test cannot stop it. Instead the service reaches it through
this proxy, and `cut()` makes the database vanish from the service's point of view: open
connections are reset and new ones are refused, as when the server is down. `restore()` brings
it back. The proxy runs its own asyncio loop in a daemon thread, so sync and async tests can use
it alike, and processes on this machine (Ray replicas) can connect to it.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from concurrent.futures import Future

from bench.local_ports import free_port


class TcpProxy:
    def __init__(self, upstream_host: str, upstream_port: int, listen_host: str = "127.0.0.1"):
        self.upstream = (upstream_host, upstream_port)
        self.host = listen_host
        self.port = free_port(listen_host)
        self.connections_accepted = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="tcp-proxy")
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    # -- public API (called from any thread) -------------------------------------------------
    def start(self) -> "TcpProxy":
        self._thread.start()
        self._call(self._listen())
        return self

    @property
    def is_up(self) -> bool:
        return self._server is not None

    def cut(self) -> None:
        """Reset every open connection and stop listening: clients get ECONNREFUSED."""
        self._call(self._cut())

    def restore(self) -> None:
        """Listen again on the same port; new connections reach the upstream server."""
        self._call(self._listen())

    def stop(self) -> None:
        if self._thread.is_alive():
            self._call(self._cut())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)

    def __enter__(self) -> "TcpProxy":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- loop side ---------------------------------------------------------------------------
    def _call(self, coro) -> None:
        future: Future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        future.result(timeout=10)

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(
                self._handle, self.host, self.port, reuse_address=True
            )

    async def _cut(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            _reset(writer)
        self._writers.clear()

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter):
        if self._server is None:  # accepted in the instant before a cut
            _reset(client_writer)
            return
        self.connections_accepted += 1
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            _reset(client_writer)
            return
        self._writers.update((client_writer, upstream_writer))
        try:
            await asyncio.gather(
                _pipe(client_reader, upstream_writer), _pipe(upstream_reader, client_writer)
            )
        finally:
            for writer in (client_writer, upstream_writer):
                self._writers.discard(writer)
                writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        if not writer.is_closing():
            try:
                writer.write_eof()
            except (OSError, RuntimeError):
                writer.close()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST rather than FIN, as a crashed server's host would."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.transport.abort()
