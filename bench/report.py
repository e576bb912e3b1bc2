"""The benchmark's table, ratios and results.json layout."""

from __future__ import annotations

import math
import platform

COLUMNS = (("server", 44), ("route", 15), ("concurrency", 5), ("rps", 8), ("sentences_per_s", 9),
           ("p50_ms", 9), ("p95_ms", 9), ("p99_ms", 9), ("errors", 6), ("shed", 6))  # fmt: skip
HEADINGS = {"concurrency": "conc", "rps": "req/s", "sentences_per_s": "sent/s"}


def print_header() -> None:
    print(" ".join(f"{HEADINGS.get(k, k):>{w}}" if i > 1 else f"{HEADINGS.get(k, k):<{w}}"
                   for i, (k, w) in enumerate(COLUMNS)), flush=True)  # fmt: skip


def print_row(row: dict) -> None:
    cells = []
    for i, (key, width) in enumerate(COLUMNS):
        value = row.get(key, "")
        text = f"{value:.1f}" if isinstance(value, float) else str(value)
        cells.append(f"{text:<{width}}" if i <= 1 else f"{text:>{width}}")
    print(" ".join(cells), flush=True)


def _find(rows: list[dict], route: str, concurrency: int) -> dict | None:
    return next((r for r in rows if r["route"] == route and r["concurrency"] == concurrency), None)


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not b or math.isnan(a) or math.isnan(b):
        return None
    return round(a / b, 3)


def summarize(raw: dict, baseline: list[dict], ours: dict, args) -> dict:
    sweep = ours["sweep"]
    raw32 = next(r["sentences_per_s"] for r in raw["rates"] if r["batch_size"] == 32)
    ours32, base32 = _find(sweep, "/predict", 32), _find(baseline, "/predict", 32)
    batch_rows = [r for r in sweep if r["route"] == "/predict/batch"]
    best_batch = max(batch_rows, key=lambda r: r["sentences_per_s"])
    results = {
        "machine": f"{platform.node()} ({platform.machine()}, {_cpus()} CPUs, no GPU)",
        "duration_s_per_step": args.duration,
        "warmup_s": args.warmup,
        "raw_model": raw,
        "throughput_ratio_c32": _ratio(ours32 and ours32["rps"], base32 and base32["rps"]),
        "p99_ratio_c32": _ratio(ours32 and ours32["p99_ms"], base32 and base32["p99_ms"]),
        "batch_vs_raw_ratio": _ratio(best_batch["sentences_per_s"], raw32),
        "batch_vs_raw_concurrency": best_batch["concurrency"],
        "errors": sum(r["errors"] for r in sweep),
        "baseline_errors": sum(r["errors"] for r in baseline),
        "shed": sum(r.get("shed", 0) for r in sweep),
        "ratios_by_concurrency": {
            route: {
                str(c): {
                    "throughput": _ratio(_get(sweep, route, c, "rps"), _get(baseline, route, c, "rps")),
                    "p99": _ratio(_get(sweep, route, c, "p99_ms"), _get(baseline, route, c, "p99_ms")),
                }
                for c in (args.concurrency if route == "/predict" else args.batch_concurrency)
            }
            for route in ("/predict", "/predict/batch")
        },
        "ours": sweep,
        "baseline": baseline,
    }  # fmt: skip
    if "logging_off" in ours:
        off = ours["logging_off"]
        results["logging_off"] = off
        results["logging_on_vs_off_ratio_c32"] = _ratio(ours32["rps"], off["rps"])
    if "default_max_ongoing" in ours:
        dflt = ours["default_max_ongoing"]
        results["default_max_ongoing"] = dflt
        results["chosen_vs_default_max_ongoing_ratio_c32"] = _ratio(ours32["rps"], dflt["rps"])
    if "cache" in ours:
        results["cache"] = ours["cache"]
        results["cache_hit_ratio"] = ours["cache"].get("cache_hit_ratio")
    return results


def backend_comparison(raw: dict, ours: dict) -> dict:
    """The shipped CPU backend against torch fp32: raw (one thread each) and in the service
    (the same steps run with `backend: torch`), texts/s ratios."""
    found = {key: raw[key] for key in ("cpu_speedup_vs_torch",) if key in raw}
    if ours.get("torch_backend"):
        found["torch_backend"] = ours["torch_backend"]
        found["service_speedup_vs_torch_backend"] = {
            f"{r['route']} c{r['concurrency']}": _ratio(
                _get(ours["sweep"], r["route"], r["concurrency"], "sentences_per_s"),
                r["sentences_per_s"])
            for r in ours["torch_backend"]
        }
    return found


def summarize_fast(raw: dict, baseline: list[dict], ours: list[dict]) -> dict:
    """The `fast_model` section: ours against the baseline with the tiny classifier, and
    /predict/batch (32 texts, 8 clients) against the raw in-process rate at batch 32."""
    raw32 = next(r["sentences_per_s"] for r in raw["rates"] if r["batch_size"] == 32)
    return {
        "raw_model": raw,
        "throughput_ratio_c32": _ratio(_get(ours, "/predict", 32, "rps"),
                                       _get(baseline, "/predict", 32, "rps")),
        "throughput_ratio_c128": _ratio(_get(ours, "/predict", 128, "rps"),
                                        _get(baseline, "/predict", 128, "rps")),
        "p50_ratio_c1": _ratio(_get(ours, "/predict", 1, "p50_ms"),
                               _get(baseline, "/predict", 1, "p50_ms")),
        "batch_vs_raw_ratio": _ratio(_get(ours, "/predict/batch", 8, "sentences_per_s"), raw32),
        "errors": sum(r["errors"] for r in ours),
        "baseline_errors": sum(r["errors"] for r in baseline),
        "shed": sum(r.get("shed", 0) for r in ours),
        "ours": ours,
        "baseline": baseline,
    }  # fmt: skip


FAST_KEYS = ("throughput_ratio_c32", "throughput_ratio_c128", "p50_ratio_c1", "batch_vs_raw_ratio",
             "errors", "baseline_errors", "shed")  # fmt: skip


def print_fast_summary(fast: dict) -> None:
    print("\nfast model (tiny random classifier: the serving path at GPU speed):")
    for key in FAST_KEYS:
        print(f"  {key:<42} {fast.get(key)}")


def _get(rows: list[dict], route: str, concurrency: int, key: str):
    row = _find(rows, route, concurrency)
    return row[key] if row else None


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


def print_summary(results: dict) -> None:
    print("\nratios ours / baseline (throughput >1 is better, p99 <1 is better):")
    for route, by_c in results["ratios_by_concurrency"].items():
        cells = ", ".join(f"c{c}: x{v['throughput']} rps, p99 x{v['p99']}" for c, v in by_c.items())
        print(f"  {route:<15} {cells}")
    keys = ("throughput_ratio_c32", "p99_ratio_c32", "batch_vs_raw_ratio", "errors",
            "baseline_errors", "shed", "logging_on_vs_off_ratio_c32",
            "chosen_vs_default_max_ongoing_ratio_c32", "cache_hit_ratio",
            "cpu_speedup_vs_torch", "service_speedup_vs_torch_backend")  # fmt: skip
    for key in keys:
        if key in results:
            print(f"  {key:<42} {results[key]}")
    raw32 = next(r for r in results["raw_model"]["rates"] if r["batch_size"] == 32)
    print(f"  raw model, batch 32: {raw32['sentences_per_s']} sentences/s "
          f"(torch threads {results['raw_model']['torch_threads']}); "
          f"/predict/batch best at c{results['batch_vs_raw_concurrency']}")
