"""Bulk scoring against the raw model rate and the service, one run: bench/bulk.json.

    flock /tmp/sentiment-heavy.lock .venv/bin/python -m bench.bulk     # = make bench-bulk

In order, nothing else of ours running during each step:
  1. inputs: CSV files (id, text) of the load's short texts (bench.loadgen.text_for);
  2. real model: the raw in-process rate (bench.raw_model: tokenize and forward, batches of
     the bulk batch size, every core) before and after `python -m bulk score` on 100,000 rows
     -> bulk_vs_raw_ratio, bulk texts/s over the mean of the two raw rates;
  3. fast model (bench.tiny_model, the GPU stand-in of `make bench`), in batches of 512 as on
     a GPU: the same on 100,000 and 1,000,000 rows -> fast_bulk_vs_raw_ratio, and rss_growth_ratio: the peak resident memory
     of every process of the 1,000,000-row run (driver, Ray's own, actors) over the 100,000's;
  4. the service with the fast model: /predict/batch, 32 texts a request, 8 clients ->
     fast_bulk_vs_service_ratio.
A bulk run's texts/s is rows over the time `score` takes from the input file to the published
output file (actor start-up included, the private Ray instance's start-up not). Every run's
output is read back: its row count must equal the input's, with no error rows.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from bench.bulk_procs import ProcessTreeSampler
from bench.loadgen import new_tag, obtain_token, run_closed_loop, text_for
from bench.ray_auth import ray_process_env
from bench.services import BIN, REPO, RayServe, scratch_dir
from bench.tiny_model import build_tiny_model

BATCH_SIZE = 64
FAST_BATCH_SIZE = 512
USER, PASSWORD = "bench_bulk_user", "bench-password-123"


def write_input(path: Path, rows: int) -> Path:
    """A CSV of `rows` distinct short texts with an id, written in slices."""
    tag = new_tag()
    with pacsv.CSVWriter(path, pa.schema([("id", pa.int64()), ("text", pa.string())])) as out:
        for start in range(0, rows, 100_000):
            ids = range(start, min(start + 100_000, rows))
            out.write_table(pa.table({"id": list(ids), "text": [text_for(i, tag) for i in ids]}))
    return path


def raw_rate(model_dir: Path | None, seconds: float, batch_size: int) -> float:
    extra = ["--model-dir", str(model_dir)] if model_dir else []
    out = subprocess.run(
        [str(BIN / "python"), "-m", "bench.raw_model", "--seconds", str(seconds),
         "--batch-sizes", str(batch_size), "--skip-backends", *extra],
        cwd=REPO, env=ray_process_env(), check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return json.loads(out.strip().splitlines()[-1])["rates"][0]["sentences_per_s"]


def bulk_run(source: Path, rows: int, model_dir: Path | None, work: Path, args,
             batch_size: int) -> dict:
    """`python -m bulk score` on a private Ray instance, its process tree sampled."""
    output = work / f"{source.stem}.scored.parquet"
    command = [str(BIN / "python"), "-m", "bulk", "score", str(source), str(output),
               "--keep", "id", "--batch-size", str(batch_size), "--json",
               *(["--model-dir", str(model_dir)] if model_dir else [])]  # fmt: skip
    started = time.perf_counter()
    with open(work / f"{source.stem}.log", "w") as log:
        process = subprocess.Popen(command, cwd=REPO, env=ray_process_env(), stdout=subprocess.PIPE,
                                   stderr=log, text=True)  # fmt: skip
        with ProcessTreeSampler(process.pid) as sampler:
            stdout, _ = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"bulk score failed ({process.returncode}); see {log.name}")
    summary = json.loads(stdout.strip().splitlines()[-1])
    rows_out = pq.ParquetFile(output).metadata.num_rows
    output.unlink()
    result = {"rows_in": rows, "rows_out": rows_out, "errors": summary["errors"],
              "texts_per_s": summary["texts_per_s"], "score_s": summary["seconds"],
              "command_wall_s": round(time.perf_counter() - started, 1),
              "peak_rss_mib": sampler.peak_rss_bytes >> 20,
              "cpu_s_by_role": sampler.cpu_by_role()}  # fmt: skip
    print(f"  {rows:,} rows: {result['texts_per_s']:,.1f} texts/s, {result['score_s']} s, "
          f"peak RSS {result['peak_rss_mib']} MiB, CPU s {result['cpu_s_by_role']}", flush=True)
    return result


def beside_raw(source: Path, rows: int, model_dir: Path | None, work: Path, args,
               batch_size: int) -> dict:
    """A bulk run between two raw-rate measurements on the same cores, same batch size."""
    before = raw_rate(model_dir, args.raw_seconds, batch_size)
    run = bulk_run(source, rows, model_dir, work, args, batch_size)
    after = raw_rate(model_dir, args.raw_seconds, batch_size)
    raw = (before + after) / 2
    print(f"  raw {before:,.1f} / {after:,.1f} texts/s -> ratio {run['texts_per_s'] / raw:.3f}",
          flush=True)  # fmt: skip
    return {**run, "raw_texts_per_s": {"before": before, "after": after, "mean": round(raw, 1)},
            "vs_raw_ratio": round(run["texts_per_s"] / raw, 3)}


async def _service_batch_rate(url: str, args) -> dict:
    token = await obtain_token(url, USER, PASSWORD)
    await run_closed_loop(url, token, route="/predict/batch", concurrency=8,
                          duration_s=args.service_warmup, texts_per_request=32, warmup_s=0)
    result = await run_closed_loop(url, token, route="/predict/batch", concurrency=8,
                                   duration_s=args.service_seconds, texts_per_request=32)
    return result.summary()


def service_rate(work: Path, model_dir: Path, args) -> dict:
    with RayServe(work) as service:
        service.deploy(service.config(user_config={"model_dir": str(model_dir)}))
        row = asyncio.run(_service_batch_rate(service.url, args))
    print(f"  /predict/batch x 8 clients: {row['sentences_per_s']:,.1f} texts/s, "
          f"errors {row['errors']}", flush=True)  # fmt: skip
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--real-rows", type=int, default=100_000)
    parser.add_argument("--fast-rows", type=int, default=1_000_000)
    parser.add_argument("--fast-small-rows", type=int, default=100_000,
                        help="the run whose peak memory the large run is held to")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="real model")
    parser.add_argument("--fast-batch-size", type=int, default=FAST_BATCH_SIZE,
                        help="fast model: a GPU's batch (the GPU RayJob's), raw rate alike")
    parser.add_argument("--raw-seconds", type=float, default=10.0)
    parser.add_argument("--service-warmup", type=float, default=10.0)
    parser.add_argument("--service-seconds", type=float, default=10.0)
    parser.add_argument("--skip-real", action="store_true")
    parser.add_argument("--skip-service", action="store_true")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "bulk.json")
    args = parser.parse_args()
    started = time.perf_counter()
    results: dict = {"batch_size": args.batch_size, "fast_batch_size": args.fast_batch_size}
    with scratch_dir() as work:
        model_dir = build_tiny_model(work / "tiny-model")
        if not args.skip_real:
            print(f"real model, {args.real_rows:,} rows ...", flush=True)
            source = write_input(work / "real.csv", args.real_rows)
            results["real"] = beside_raw(source, args.real_rows, None, work, args,
                                         args.batch_size)
            results["bulk_vs_raw_ratio"] = results["real"]["vs_raw_ratio"]
            results["real_s_per_100k_rows"] = round(
                results["real"]["score_s"] * 100_000 / args.real_rows, 1)
        print(f"fast model, {args.fast_small_rows:,} rows ...", flush=True)
        small = write_input(work / "fast-small.csv", args.fast_small_rows)
        results["fast_small"] = bulk_run(small, args.fast_small_rows, model_dir, work, args,
                                         args.fast_batch_size)
        print(f"fast model, {args.fast_rows:,} rows ...", flush=True)
        large = write_input(work / "fast-large.csv", args.fast_rows)
        results["fast"] = beside_raw(large, args.fast_rows, model_dir, work, args,
                                     args.fast_batch_size)
        results["fast_bulk_vs_raw_ratio"] = results["fast"]["vs_raw_ratio"]
        results["fast_wall_s"] = results["fast"]["score_s"]
        results["rss_growth_ratio"] = round(
            results["fast"]["peak_rss_mib"] / results["fast_small"]["peak_rss_mib"], 3)
        if not args.skip_service:
            print("the service, fast model ...", flush=True)
            results["service_fast"] = service_rate(work, model_dir, args)
            results["fast_bulk_vs_service_ratio"] = round(
                results["fast"]["texts_per_s"] / results["service_fast"]["sentences_per_s"], 3)
    runs = [results[k] for k in ("real", "fast_small", "fast") if k in results]
    results["errors"] = sum(run["errors"] for run in runs)
    results["rows_out_equal_rows_in"] = all(run["rows_out"] == run["rows_in"] for run in runs)
    results["wall_s"] = round(time.perf_counter() - started, 1)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    figures = {k: v for k, v in results.items() if not isinstance(v, dict)}
    print(json.dumps(figures, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
