"""A short overload run: past its queues the service answers 503 + Retry-After at once.

    flock /tmp/sentiment-heavy.lock .venv/bin/python -m bench.overload            # own cluster
    .venv/bin/python -m bench.overload --host http://127.0.0.1:8000 --concurrency 2000

Started here, the service runs serve_config.yaml as shipped: each ingress replica admits the
requests that can start on the model within the target wait (serve_app/admission.py) and
answers the rest 503 + Retry-After, so 800 clients pass it on two cores. Counts every answer by status, checks each 503 carries Retry-After,
and reports how fast rejections come back compared with served requests: shedding load means
fast 503s, never client time-outs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import aiohttp

from bench.loadgen import obtain_token, text_for
from bench.services import REPO, RayServe, scratch_dir


async def overload(url: str, concurrency: int, duration_s: float, timeout_s: float) -> dict:
    token = await obtain_token(url, "overload_user", "overload-password-1")
    headers = {"Authorization": f"Bearer {token}"}
    statuses: Counter[str] = Counter()
    latency: dict[str, list[float]] = {"200": [], "503": []}
    retry_after: Counter[str] = Counter()
    count = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(url, connector=connector, timeout=timeout) as session:

        async def client(deadline: float) -> None:
            nonlocal count
            while time.perf_counter() < deadline:
                count += 1
                started = time.perf_counter()
                wait_s = 0.0
                try:
                    async with session.post("/predict", headers=headers,
                                            json={"text": text_for(count, "overload-")}) as resp:
                        await resp.read()
                        status = str(resp.status)
                        if resp.status == 503:
                            header = resp.headers.get("Retry-After", "missing")
                            retry_after[header] += 1
                            wait_s = float(header) if header.isdigit() else 0.05
                except asyncio.TimeoutError:
                    status = "timeout"
                except aiohttp.ClientError as exc:
                    status = type(exc).__name__
                statuses[status] += 1
                if status in latency:
                    latency[status].append((time.perf_counter() - started) * 1000)
                if wait_s:  # a well-behaved client waits as long as Retry-After says
                    await asyncio.sleep(wait_s)

        deadline = time.perf_counter() + duration_s
        await asyncio.gather(*(client(deadline) for _ in range(concurrency)))

    def p(values: list[float], q: float) -> float | None:
        if len(values) < 2:
            return round(values[0], 1) if values else None
        return round(statistics.quantiles(values, n=100)[int(q * 100) - 1], 1)

    return {
        "concurrency": concurrency,
        "duration_s": duration_s,
        "statuses": dict(statuses),
        "retry_after_headers_on_503": dict(retry_after),
        "timeouts": statuses.get("timeout", 0),
        "p50_ms_200": p(latency["200"], 0.5), "p99_ms_200": p(latency["200"], 0.99),
        "p50_ms_503": p(latency["503"], 0.5), "p99_ms_503": p(latency["503"], 0.99),
    }  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", help="a running service; default: start one here")
    parser.add_argument("--concurrency", type=int, default=800)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--timeout", type=float, default=30.0, help="client time-out, seconds")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "overload.json")
    args = parser.parse_args()
    run = lambda url: asyncio.run(overload(url, args.concurrency, args.duration, args.timeout))  # noqa: E731
    if args.host:
        result = run(args.host)
    else:
        with scratch_dir() as work, RayServe(work) as service:
            service.deploy(service.config())
            result = run(service.url)
    print(json.dumps(result, indent=2))
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    missing = result["retry_after_headers_on_503"].get("missing", 0)
    return 0 if result["statuses"].get("503") and not missing and not result["timeouts"] else 1


if __name__ == "__main__":
    sys.exit(main())
