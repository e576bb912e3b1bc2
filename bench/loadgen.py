"""Closed-loop HTTP load: N clients, each sends its next request as soon as the last one returns.

A closed loop measures what a server sustains at a fixed number of requests in flight, so both
servers are compared at the same concurrency rather than at an arrival rate one of them cannot
keep up with. Requests already in flight when the window closes are awaited and counted, so slow
servers are not flattered by dropping their slowest requests.

Clients behave like those of a service that sheds load (as bench/locustfile.py's users do): a
503 or 429 with Retry-After is waited out and the same request sent again, at most MAX_RETRIES
times. Such an answer is counted as `shed`; `errors` are the requests that still failed, and a
request's latency runs from its first attempt to its answer.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import aiohttp

MAX_RETRIES = 5
RETRY_JITTER_S = 1.0  # added at random to Retry-After, so refused clients return spread out

SAMPLE_TEXTS = [
    "I absolutely love this product, it works perfectly.",
    "The delivery was late and the box arrived damaged.",
    "It is a phone. It makes calls.",
    "Worst customer service I have ever dealt with.",
    "Pretty good value for the price, would buy again.",
    "The movie was fine, nothing special either way.",
    "What a fantastic experience, the staff were wonderful!",
    "I want my money back, this is broken.",
]


def new_tag() -> str:
    """A load run's tag: its texts are new to the service, and every run's tokenize alike
    (the raw model rate is measured on texts of this same shape)."""
    return f"{secrets.token_hex(3)}-"


def text_for(i: int, tag: str = "") -> str:
    """Distinct texts (per i and tag) so the result cache cannot answer the load from memory."""
    return f"{SAMPLE_TEXTS[i % len(SAMPLE_TEXTS)]} (review {tag}{i})"


@dataclass
class LoadResult:
    route: str
    concurrency: int
    requests: int
    sentences: int
    errors: int
    elapsed_s: float
    latencies_ms: list[float] = field(default_factory=list, repr=False)
    status_counts: dict[str, int] = field(default_factory=dict)  # final answers
    shed: int = 0  # 503/429 answers with Retry-After that were waited out and retried

    @property
    def rps(self) -> float:
        return self.requests / self.elapsed_s if self.elapsed_s else 0.0

    @property
    def sentences_per_s(self) -> float:
        return self.sentences / self.elapsed_s if self.elapsed_s else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        if len(self.latencies_ms) == 1:
            return self.latencies_ms[0]
        return statistics.quantiles(self.latencies_ms, n=1000, method="inclusive")[
            min(998, int(q * 1000) - 1)
        ]

    def summary(self) -> dict:
        data = asdict(self)
        data.pop("latencies_ms")
        data.update(
            rps=round(self.rps, 2),
            sentences_per_s=round(self.sentences_per_s, 2),
            p50_ms=round(self.percentile(0.50), 1),
            p95_ms=round(self.percentile(0.95), 1),
            p99_ms=round(self.percentile(0.99), 1),
            elapsed_s=round(self.elapsed_s, 2),
        )
        return data


async def run_closed_loop(
    base_url: str,
    token: str,
    *,
    route: str,
    concurrency: int,
    duration_s: float,
    texts_per_request: int = 1,
    warmup_s: float = 1.0,
    timeout_s: float = 120.0,
    text_pool: int | None = None,
    on_start: Callable[[], None] | None = None,
) -> LoadResult:
    """Drive `route` ("/predict" or "/predict/batch") with `concurrency` closed-loop clients.

    Texts are unique to this run unless `text_pool` is given: then they cycle through that
    many distinct texts (to measure the result cache). `on_start` is called as the measured
    window opens (after the warm-up), e.g. to snapshot CPU counters.
    """
    headers = {"Authorization": f"Bearer {token}"}
    tag = new_tag()
    counter = 0

    def text(i: int) -> str:
        return text_for(i % text_pool if text_pool else i, tag)

    def next_body() -> dict:
        nonlocal counter
        counter += texts_per_request
        if route == "/predict":
            return {"text": text(counter)}
        return {"texts": [text(counter + k) for k in range(texts_per_request)]}

    result = LoadResult(route, concurrency, 0, 0, 0, 0.0)
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(base_url, connector=connector, timeout=timeout) as session:

        async def one(record: bool) -> None:
            started = time.perf_counter()
            body = next_body()
            for attempt in range(MAX_RETRIES + 1):
                retry_after = None
                try:
                    async with session.post(route, json=body, headers=headers) as resp:
                        await resp.read()
                        status = str(resp.status)
                        if resp.status in (429, 503):
                            retry_after = _retry_after(resp.headers.get("Retry-After"))
                except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                    status = type(exc).__name__
                if retry_after is None or attempt == MAX_RETRIES:
                    break
                if record:
                    result.shed += 1
                await asyncio.sleep(retry_after + RETRY_JITTER_S * random.random())
            if not record:
                return
            result.status_counts[status] = result.status_counts.get(status, 0) + 1
            if status == "200":
                result.requests += 1
                result.sentences += texts_per_request
                result.latencies_ms.append((time.perf_counter() - started) * 1000)
            else:
                result.errors += 1

        async def client(deadline: float, record: bool) -> None:
            while time.perf_counter() < deadline:
                await one(record)

        # Warm-up fills connection pools and batch queues; its requests are not recorded.
        if warmup_s > 0:
            await asyncio.gather(
                *(client(time.perf_counter() + warmup_s, False) for _ in range(concurrency))
            )
        if on_start is not None:
            on_start()
        start = time.perf_counter()
        await asyncio.gather(*(client(start + duration_s, True) for _ in range(concurrency)))
        result.elapsed_s = time.perf_counter() - start
    return result


def _retry_after(header: str | None) -> float | None:
    try:
        return max(0.0, float(header)) if header is not None else None
    except ValueError:
        return None


async def obtain_token(base_url: str, username: str, password: str) -> str:
    """Sign up (409 if the user exists is fine) and log in through the public API."""
    async with aiohttp.ClientSession(base_url) as session:
        async with session.post("/auth/", json={"username": username, "password": password}) as r:
            if r.status not in (201, 409):
                raise RuntimeError(f"sign-up failed: {r.status} {await r.text()}")
        form = {"username": username, "password": password}
        async with session.post("/auth/token", data=form) as r:
            if r.status != 200:
                raise RuntimeError(f"log-in failed: {r.status} {await r.text()}")
            return (await r.json())["access_token"]
