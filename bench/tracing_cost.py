"""What tracing costs: the same closed-loop load with tracing off and with every request traced.

    flock /tmp/sentiment-heavy.lock .venv/bin/python -m bench.tracing_cost

Two private clusters in turn (bench.services.RayServe, serve_config.yaml): one with no
OpenTelemetry variable, one with OTEL_EXPORTER_OTLP_ENDPOINT pointing at a local OTLP/HTTP sink
and OTEL_TRACES_SAMPLER=always_on (plus the Ray Serve switches derived from them, as `make run`
sets them). Each gets /predict at each concurrency with repeated texts (the model's result cache
answers: a near-free model, so the request path is what is measured) and with unique texts
(every text batched through the model). Prints requests/s, latency percentiles and the CPU
milliseconds per request spent by each kind of Ray process (proxy, ingress, model, the rest).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil

from bench.loadgen import obtain_token, run_closed_loop
from bench.services import REPO, RayServe, scratch_dir
from deployments.tracing_env import ray_tracing_env

USER, PASSWORD = "bench_user", "bench-password-123"
PROCESS_KINDS = (("Proxy", "proxy"), ("APIIngress", "ingress"), ("SentimentModel", "model"))


@contextmanager
def otlp_sink() -> Iterator[tuple[str, Counter]]:
    """An OTLP/HTTP endpoint that takes every export and keeps only counts (a collector's
    work is not the service's)."""
    received: Counter = Counter()

    class Sink(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            received["bytes"] += len(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            received["exports"] += 1
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()


def cpu_seconds_by_kind(root_pid: int) -> Counter:
    """CPU seconds (user + system) so far of every process under `root_pid`, by kind."""
    totals: Counter = Counter()
    root = psutil.Process(root_pid)
    for proc in [root, *root.children(recursive=True)]:
        try:
            title = " ".join(proc.cmdline())
            times = proc.cpu_times()
        except psutil.Error:
            continue
        kind = next((k for marker, k in PROCESS_KINDS if marker in title), "other")
        totals[kind] += times.user + times.system
    return totals


async def measure(service: RayServe, *, concurrency: int, repeated: bool, seconds: float) -> dict:
    token = await obtain_token(service.url, USER, PASSWORD)
    pool = 8 if repeated else None
    await run_closed_loop(service.url, token, route="/predict", concurrency=concurrency,
                          duration_s=2.0, warmup_s=0, text_pool=pool)  # warm-up, not counted
    before = cpu_seconds_by_kind(service.proc.pid)
    result = await run_closed_loop(service.url, token, route="/predict", concurrency=concurrency,
                                   duration_s=seconds, warmup_s=0, text_pool=pool)
    after = cpu_seconds_by_kind(service.proc.pid)
    summary = result.summary()
    requests = max(1, summary["requests"])
    cpu_ms = {kind: round((after[kind] - before[kind]) * 1000 / requests, 2)
              for kind in ("proxy", "ingress", "model", "other")}
    return {"texts": "repeated" if repeated else "unique", "concurrency": concurrency,
            "rps": summary["rps"], "p50_ms": summary["p50_ms"], "p99_ms": summary["p99_ms"],
            "errors": summary["errors"], "cpu_ms_per_request": cpu_ms,
            "cpu_ms_total": round(sum(cpu_ms.values()), 2)}


def run_mode(work: Path, label: str, cluster_env: dict[str, str], args) -> list[dict]:
    rows = []
    with RayServe(work, cluster_env=cluster_env) as service:
        service.deploy(service.config())
        for repeated in (True, False):
            for concurrency in args.concurrency:
                row = {"tracing": label, **asyncio.run(measure(
                    service, concurrency=concurrency, repeated=repeated, seconds=args.duration))}
                print(json.dumps(row), flush=True)
                rows.append(row)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--rounds", type=int, default=1, help="off/on pairs, alternating")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "tracing_cost.json")
    args = parser.parse_args()
    rows: list[dict] = []
    with otlp_sink() as (endpoint, received), scratch_dir() as work:
        otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                "OTEL_SERVICE_NAME": "sentiment-serve-bench", "OTEL_TRACES_SAMPLER": "always_on"}
        for _ in range(args.rounds):
            rows += run_mode(work, "off", {}, args)
            rows += run_mode(work, "on", {**otel, **ray_tracing_env(otel)}, args)
        exported = dict(received)
    print(f"OTLP sink received {exported.get('exports', 0)} exports, "
          f"{exported.get('bytes', 0)} bytes")
    args.out.write_text(json.dumps({"rows": rows, "otlp_received": exported}, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
