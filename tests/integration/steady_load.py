"""Steady HTTP load against a running service, recording every request's outcome.

Fault and upgrade tests keep this running while they break or change something, then judge the
outcomes by time window: what failed during the fault, what failed after recovery, which model
version answered when. Each client sends one request after another (closed loop), with unique
texts so no cache stands between the request and the model.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from dataclasses import dataclass, field

import httpx


@dataclass(frozen=True)
class Outcome:
    started: float  # time.monotonic() when sent
    finished: float
    status: int | None  # None: no HTTP response at all (connection error, timeout)
    body: dict | list | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == 200


@dataclass
class LoadReport:
    outcomes: list[Outcome] = field(default_factory=list)

    def between(self, start: float, end: float) -> list[Outcome]:
        return [o for o in self.outcomes if start <= o.started < end]

    def after(self, start: float) -> list[Outcome]:
        return [o for o in self.outcomes if o.started >= start]

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]

    def summary(self) -> str:
        codes: dict[str, int] = {}
        for o in self.outcomes:
            key = str(o.status) if o.status is not None else f"no response ({o.error})"
            codes[key] = codes.get(key, 0) + 1
        return f"{len(self.outcomes)} requests: {codes}"


class SteadyLoad:
    """`concurrency` clients POSTing `{"text": ...}` to `path` until stopped."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        concurrency: int = 4,
        path: str = "/predict",
        pause_s: float = 0.0,
        timeout_s: float = 30.0,
        label: str = "steady load",
    ):
        self.base_url = base_url
        self.headers = {"Authorization": f"Bearer {token}"}
        self.concurrency = concurrency
        self.path = path
        self.pause_s = pause_s
        self.timeout_s = timeout_s
        self.label = label
        self.report = LoadReport()
        self._counter = itertools.count()
        self._lock = threading.Lock()
        self._stop: asyncio.Event | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True, name="steady-load")
        self._started = threading.Event()

    def start(self) -> "SteadyLoad":
        self._thread.start()
        self._started.wait(5)
        return self

    def stop(self) -> LoadReport:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=self.timeout_s + 10)
        return self.snapshot()

    def snapshot(self) -> LoadReport:
        with self._lock:
            return LoadReport(list(self.report.outcomes))

    def count(self) -> int:
        with self._lock:
            return len(self.report.outcomes)

    def wait_for(self, n: int, timeout_s: float = 60.0) -> None:
        """Block until at least `n` more requests have completed."""
        target = self.count() + n
        deadline = time.monotonic() + timeout_s
        while self.count() < target:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.label}: fewer than {n} requests in {timeout_s}s")
            time.sleep(0.05)

    def __enter__(self) -> "SteadyLoad":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main())
        self._loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        self._started.set()
        limits = httpx.Limits(max_connections=self.concurrency)
        async with httpx.AsyncClient(
            base_url=self.base_url, headers=self.headers, timeout=self.timeout_s, limits=limits
        ) as client:
            await asyncio.gather(*(self._client_loop(client, i) for i in range(self.concurrency)))

    async def _client_loop(self, client: httpx.AsyncClient, client_id: int) -> None:
        assert self._stop is not None
        while not self._stop.is_set():
            n = next(self._counter)
            text = f"{self.label} #{n} from client {client_id}: the service works well today"
            started = time.monotonic()
            try:
                response = await client.post(self.path, json={"text": text})
                try:
                    body = response.json()
                except ValueError:
                    body = {"raw": response.text[:500]}
                outcome = Outcome(started, time.monotonic(), response.status_code, body)
            except httpx.HTTPError as exc:
                outcome = Outcome(started, time.monotonic(), None, None, type(exc).__name__)
            with self._lock:
                self.report.outcomes.append(outcome)
            if self.pause_s:
                await asyncio.sleep(self.pause_s)
