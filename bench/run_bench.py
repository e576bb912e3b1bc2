"""sentiment-serve against the naive baseline, one run, same machine, model and database engine.

    flock /tmp/sentiment-heavy.lock .venv/bin/python -m bench.run_bench     # = make bench

In order, with nothing else of ours running during each step:
  1. the raw batched model rate (no HTTP) at batch 1 and 32;
  2. the baseline (bench/baseline_server.py under uvicorn) and then our service (Ray Serve,
     serve_config.yaml on free ports) under the same closed-loop load: /predict at
     concurrency 1, 8, 32, 128 and /predict/batch (32 texts per request) at 1, 8, 32;
  3. on our service only, at concurrency 32 on /predict: PREDICTION_LOGGING off, Serve's
     default max_ongoing_requests (5) on both deployments, and a cache run with repeated texts;
  3b. the same service with `backend: torch` in user_config (the backend before ONNX Runtime):
     /predict at 32 clients and /predict/batch at 8, against the shipped backend's rows;
  4. fast-model mode (bench/fast_model.py): steps 1-2 again with a tiny random classifier that
     stands in for a GPU, with a CPU account per request by process.
Step 1 also rates every CPU backend at one thread (raw_model.backends) and gives the shipped
backend's speed-up over torch fp32 (cpu_speedup_vs_torch). Our service runs as shipped:
serve_config.yaml and the Ray processes' environment of
configs/ray-serve.env. Prints the table and ratios, writes bench/results.json (the
resident memory of the service's processes after the real-model run included).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

from bench import fast_model, report
from bench.cpu_account import resident_mib
from bench.loadgen import LoadResult, obtain_token, run_closed_loop
from bench.ray_auth import ray_process_env
from bench.scrape import scrape
from bench.ray_cluster import shipped_ray_env
from bench.services import BIN, REPO, RayServe, baseline_server, scratch_dir

USER, PASSWORD = "bench_user", "bench-password-123"
ROUTES = (("/predict", 1), ("/predict/batch", 32))


def raw_model_rate(seconds: float, model_dir: Path | None = None) -> dict:
    extra = ["--model-dir", str(model_dir)] if model_dir else []
    out = subprocess.run(
        [str(BIN / "python"), "-m", "bench.raw_model", "--seconds", str(seconds), *extra],
        cwd=REPO, env=ray_process_env(), check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return json.loads(out.strip().splitlines()[-1])


async def sweep(url: str, label: str, args) -> list[dict]:
    token = await obtain_token(url, USER, PASSWORD)
    # One warm-up for the whole sweep: connections, the model's first batches, SQLite pages,
    # and for Serve the replica count that sustained load settles on (the autoscaler acts
    # after upscale_delay_s; the sweep's steps are shorter than its downscale_delay_s).
    await run_closed_loop(url, token, route="/predict", concurrency=32,
                          duration_s=args.warmup, warmup_s=0)  # fmt: skip
    rows = []
    for route, texts in ROUTES:
        levels = args.concurrency if texts == 1 else args.batch_concurrency
        for concurrency in levels:
            result = await run_closed_loop(url, token, route=route, concurrency=concurrency,
                                           duration_s=args.duration, texts_per_request=texts,
                                           warmup_s=0)  # fmt: skip
            rows.append({"server": label, **result.summary()})
            report.print_row(rows[-1])
    return rows


async def one_run(url: str, label: str, args, **kwargs) -> dict:
    token = await obtain_token(url, USER, PASSWORD)
    kwargs.setdefault("concurrency", 32)
    result: LoadResult = await run_closed_loop(url, token, **kwargs,
                                               duration_s=args.duration)  # fmt: skip
    row = {"server": label, **result.summary()}
    report.print_row(row)
    return row


def cache_counts(metrics_url: str) -> tuple[float, float]:
    totals = scrape(metrics_url)
    return (totals.get("ray_sentiment_cache_hits_total", 0.0),
            totals.get("ray_sentiment_cache_misses_total", 0.0))  # fmt: skip


async def cache_run(service: RayServe, args) -> dict:
    """Repeated texts (a pool of 64) on /predict/batch: throughput and the cache's hit ratio."""
    metrics_url = f"http://127.0.0.1:{service.metrics_port}/metrics"
    hits0, misses0 = cache_counts(metrics_url)
    row = await one_run(service.url, "ours, repeated texts", args, route="/predict/batch",
                        texts_per_request=32, text_pool=64)  # fmt: skip
    # Replicas push metrics to the node's exporter every few seconds; wait for the last push.
    hits, misses = hits0, misses0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        await asyncio.sleep(3)
        hits, misses = cache_counts(metrics_url)
        if hits + misses - hits0 - misses0 >= row["sentences"]:
            break
    lookups = (hits - hits0) + (misses - misses0)
    row["cache_hit_ratio"] = round((hits - hits0) / lookups, 4) if lookups else None
    return row


async def measure_ours(service: RayServe, args) -> dict:
    found: dict = {}
    service.deploy(service.config())
    found["sweep"] = await sweep(service.url, "ours", args)
    if args.quick:
        return found
    found["cache"] = await cache_run(service, args)

    service.deploy(service.config(env={"PREDICTION_LOGGING": "false"}))
    found["logging_off"] = await one_run(service.url, "ours, logging off", args,
                                         route="/predict")  # fmt: skip

    service.deploy(service.config(model_max_ongoing=5, ingress_max_ongoing=5))
    found["default_max_ongoing"] = await one_run(
        service.url, "ours, max_ongoing_requests=5 (Serve default)", args, route="/predict"
    )

    service.deploy(service.config(user_config={"backend": "torch"}))
    found["torch_backend"] = [
        await one_run(service.url, "ours, backend torch", args, route="/predict"),
        await one_run(service.url, "ours, backend torch", args, route="/predict/batch",
                      texts_per_request=32, concurrency=8),
    ]
    return found


def measure_ours_and_memory(service: RayServe, args) -> dict:
    found = asyncio.run(measure_ours(service, args))
    found["resident_mib"] = resident_mib(service.root_pid)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per load step")
    parser.add_argument("--warmup", type=float, default=30.0,
                        help="seconds of load before each server's sweep")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 128])
    # 128 clients x 32 texts is 4096 texts in flight: a minute per request on two cores.
    parser.add_argument("--batch-concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--quick", action="store_true", help="skip the extra rows")
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--ray-env", nargs="*", default=[], metavar="NAME=VALUE",
                        help="environment for every Ray process (Serve tuning experiments)")
    parser.add_argument("--fast-only", action="store_true",
                        help="only the fast-model mode; merged into an existing --out file")
    parser.add_argument("--skip-fast", action="store_true", help="skip the fast-model mode")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results.json")
    args = parser.parse_args()
    started = time.time()
    cluster_env = dict(item.split("=", 1) for item in args.ray_env)

    if args.fast_only:
        with scratch_dir() as work:
            fast = fast_model.measure(work, args, raw_model_rate, cluster_env)
        results = json.loads(args.out.read_text()) if args.out.exists() else {}
        results["fast_model"] = fast
        report.print_fast_summary(fast)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.out}")
        return 0

    print("raw model rate (no HTTP) ...", flush=True)
    raw = raw_model_rate(5.0)
    print("  " + ", ".join(f"batch {r['batch_size']}: {r['sentences_per_s']} sentences/s"
                           for r in raw["rates"]), flush=True)  # fmt: skip
    print(f"  one thread each: {raw.get('backends')}; shipped ({raw['backend']}) over torch: "
          f"{raw.get('cpu_speedup_vs_torch')}", flush=True)

    baseline_rows: list[dict] = []
    with scratch_dir() as work:
        if not args.skip_baseline:
            print("baseline (FastAPI + uvicorn, one text per model call) ...", flush=True)
            report.print_header()
            with baseline_server(work) as url:
                baseline_rows = asyncio.run(sweep(url, "baseline", args))
        print("ours (Ray Serve, serve_config.yaml) ...", flush=True)
        report.print_header()
        with RayServe(work, cluster_env=cluster_env) as service:
            ours = measure_ours_and_memory(service, args)
        fast = None if args.skip_fast else fast_model.measure(work, args, raw_model_rate,
                                                              cluster_env)  # fmt: skip

    results = report.summarize(raw, baseline_rows, ours, args)
    results["resident_mib_after_run"] = ours["resident_mib"]
    results.update(report.backend_comparison(raw, ours))
    if fast is not None:
        results["fast_model"] = fast
    results["ray_env"] = {**shipped_ray_env(), **cluster_env}
    results["wall_s"] = round(time.time() - started, 1)
    report.print_summary(results)
    if fast is not None:
        report.print_fast_summary(fast)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
