"""The bench's fast-model mode: the serving path at GPU speed, measured on a CPU.

Both servers, and the raw in-process rate, use the tiny random classifier of
`bench.tiny_model` instead of the shipped model, so the forward pass is nearly free and what a
request costs is the path around it: HTTP, auth, the Ray hops, the prediction log. The service
runs exactly as shipped (serve_config.yaml, the Ray processes' environment of
configs/ray-serve.env) with only `model_dir` pointed at the tiny model. Every load step
records a CPU account: core-milliseconds per request by process role (`bench.cpu_account`).
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path

from bench import report
from bench.cpu_account import CpuAccount
from bench.loadgen import LoadResult, obtain_token, run_closed_loop
from bench.services import RayServe, baseline_server
from bench.tiny_model import build_tiny_model

USER, PASSWORD = "bench_fast_user", "bench-password-123"
# (route, concurrency, texts per request): the rows behind the fast-model ratios.
STEPS = (("/predict", 1, 1), ("/predict", 32, 1), ("/predict", 128, 1), ("/predict/batch", 8, 32))


async def _sweep(url: str, label: str, root_pid: int, args) -> list[dict]:
    token = await obtain_token(url, USER, PASSWORD)
    await run_closed_loop(url, token, route="/predict", concurrency=32, duration_s=args.warmup,
                          warmup_s=0)  # fmt: skip
    rows = []
    for route, concurrency, texts in STEPS:
        account = CpuAccount(root_pid)
        result: LoadResult = await run_closed_loop(
            url, token, route=route, concurrency=concurrency, duration_s=args.duration,
            texts_per_request=texts, warmup_s=1, on_start=account.start,
        )  # fmt: skip
        row = {"server": label, **result.summary(),
               "cpu_ms_per_request": account.per_request(result.requests)}  # fmt: skip
        report.print_row(row)
        print(f"{'':44} core-ms/request: {row['cpu_ms_per_request']}", flush=True)
        rows.append(row)
    return rows


def _baseline_pid(url: str) -> int:
    port = url.rsplit(":", 1)[1]
    out = subprocess.run(["pgrep", "-f", f"uvicorn bench.baseline_server:app .*--port {port}"],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    return int(out.split()[0])


def measure(work: Path, args, raw_rate: Callable[[float, Path], dict],
            cluster_env: dict[str, str]) -> dict:
    """Raw rate, baseline and ours with the tiny model; the `fast_model` results section."""
    model_dir = build_tiny_model(work / "tiny-model")
    print("fast model: raw rate (no HTTP) ...", flush=True)
    raw = raw_rate(5.0, model_dir)
    baseline_rows: list[dict] = []
    if not args.skip_baseline:
        print("fast model: baseline ...", flush=True)
        report.print_header()
        with baseline_server(work, BASELINE_MODEL_DIR=str(model_dir)) as url:
            baseline_rows = _run(_sweep(url, "baseline, fast model", _baseline_pid(url), args))
    print("fast model: ours ...", flush=True)
    report.print_header()
    ours_rows = measure_ours(work, model_dir, args, cluster_env, "ours, fast model")
    return report.summarize_fast(raw, baseline_rows, ours_rows)


def measure_ours(work: Path, model_dir: Path, args, cluster_env: dict[str, str],
                 label: str) -> list[dict]:
    """The steps' rows of our service on a private cluster, serving the tiny model."""
    with RayServe(work, cluster_env=cluster_env) as service:
        service.deploy(service.config(user_config={"model_dir": str(model_dir)}))
        return _run(_sweep(service.url, label, service.root_pid, args))


def _run(coro: Awaitable[list[dict]]) -> list[dict]:
    return asyncio.run(coro)  # type: ignore[arg-type]
