"""What tracing costs: `make bench`'s fast-model steps with tracing off and with every request
traced (OTEL_TRACES_SAMPLER=always_on).

    flock /tmp/sentiment-heavy.lock .venv/bin/python -m bench.tracing_cost

Private clusters in turn, off and on alternating (`--rounds` pairs), each serving the tiny
random classifier of the bench's fast-model mode (bench/fast_model.py), so the forward pass is
nearly free and what tracing adds to the request path is what shows. "On" is the shipped
configuration with OTEL_EXPORTER_OTLP_ENDPOINT pointing at a local OTLP/HTTP sink and the Ray
Serve switches derived from it, as `make run` sets them. Each row carries the CPU account per
request by process role (bench/cpu_account.py). Writes bench/tracing_cost.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from bench import report
from bench.fast_model import measure_ours
from bench.services import REPO, scratch_dir
from bench.tiny_model import build_tiny_model
from deployments.tracing_env import ray_tracing_env


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


def otel_env(endpoint: str) -> dict[str, str]:
    otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_SERVICE_NAME": "sentiment-serve-bench", "OTEL_TRACES_SAMPLER": "always_on"}
    return {**otel, **ray_tracing_env(otel)}


def summarize(rows: list[dict]) -> list[dict]:
    """Per step and mode: the median over rounds of req/s, p50 and CPU ms per request."""
    by_step: dict[tuple, dict[str, list[dict]]] = {}
    for row in rows:
        key = (row["route"], row["concurrency"])
        by_step.setdefault(key, {}).setdefault(row["tracing"], []).append(row)
    summary = []
    for (route, concurrency), modes in by_step.items():
        line = {"route": route, "concurrency": concurrency}
        for mode, found in modes.items():
            line[mode] = {"rps": _median([r["rps"] for r in found]),
                          "p50_ms": _median([r["p50_ms"] for r in found]),
                          "cpu_ms_total": _median([r["cpu_ms_per_request"]["total"]
                                                   for r in found])}
        if "off" in modes and "on" in modes:
            line["rps_on_vs_off"] = round(line["on"]["rps"] / line["off"]["rps"], 3)
        summary.append(line)
    return summary


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per load step")
    parser.add_argument("--warmup", type=float, default=15.0, help="seconds of load per cluster")
    parser.add_argument("--rounds", type=int, default=2, help="off/on pairs, alternating")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "tracing_cost.json")
    args = parser.parse_args()
    rows: list[dict] = []
    with otlp_sink() as (endpoint, received), scratch_dir() as work:
        model_dir = build_tiny_model(work / "tiny-model")
        for _ in range(args.rounds):
            for mode, env in (("off", {}), ("on", otel_env(endpoint))):
                print(f"tracing {mode} ...", flush=True)
                report.print_header()
                found = measure_ours(work, model_dir, args, env, f"ours, tracing {mode}")
                rows += [{"tracing": mode, **row} for row in found]
        exported = dict(received)
    summary = summarize(rows)
    for line in summary:
        print(json.dumps(line))
    print(f"OTLP sink received {exported.get('exports', 0)} exports, "
          f"{exported.get('bytes', 0)} bytes")
    args.out.write_text(json.dumps({"summary": summary, "rows": rows, "otlp_received": exported},
                                   indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
